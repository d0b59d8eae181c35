"""State shared by every replica: the backend (in-process or Redis), the response cache, rate limits."""

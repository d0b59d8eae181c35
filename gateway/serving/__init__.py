"""The HTTP edge: endpoints, the per-request ASGI layers, the running snapshot and its reload."""

"""Fakes for the one thing tests may fake: the model provider."""

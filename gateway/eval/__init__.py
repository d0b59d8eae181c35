"""``prefit eval``: held-out sets through the real pipeline, scored, compared and gated."""

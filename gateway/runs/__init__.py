"""Stored eval runs: the record every ``prefit eval`` iteration leaves, and what is read back from it."""

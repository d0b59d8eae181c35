"""Configuration files in, one frozen and validated ``Config`` out."""

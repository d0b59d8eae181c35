"""The seam to model providers: one small protocol, one module per provider, errors mapped once."""

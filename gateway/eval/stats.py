"""The statistics ``prefit eval`` reports, kept with the stored runs (``gateway.runs.stats``)."""

from __future__ import annotations

from gateway.runs.stats import mcnemar_exact, percentile, wilson

__all__ = ["mcnemar_exact", "percentile", "wilson"]

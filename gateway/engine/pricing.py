"""What a call cost: upstream usage times the ``prices`` table (USD per million tokens)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.settings import Price

__all__ = ["cost_usd"]

_PER = 1_000_000


def _int(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def cost_usd(prices: Mapping[str, Price], model: str, usage: Mapping[str, Any] | None) -> float | None:
    """The price of one answer, or None when the model has no price (unknown is not free)."""
    price = prices.get(model)
    if price is None or not usage:
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    cached = min(cached, prompt) if price.cached_input is not None else 0
    total = (prompt - cached) * price.input + completion * price.output + cached * (price.cached_input or 0.0)
    return total / _PER

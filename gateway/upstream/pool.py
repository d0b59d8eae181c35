"""Every upstream of one configuration, each built by the implementation its settings name.

A new provider is one module implementing ``gateway.upstream.base.Upstream`` and one entry in
``_PROVIDERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gateway.metrics import Metrics
from gateway.settings import UpstreamSettings
from gateway.upstream.anthropic import AnthropicUpstream
from gateway.upstream.base import Upstream
from gateway.upstream.openai import OpenAIUpstream

__all__ = ["UpstreamPool", "build_upstream"]

_PROVIDERS: dict[str, Callable[[str, UpstreamSettings, Metrics], Upstream]] = {
    "openai": OpenAIUpstream,
    "anthropic": AnthropicUpstream,
}


def build_upstream(name: str, settings: UpstreamSettings, metrics: Metrics) -> Upstream:
    """The implementation for ``settings.kind`` (settings validation keeps it one of ``_PROVIDERS``)."""
    return _PROVIDERS[settings.kind](name, settings, metrics)


class UpstreamPool:
    """All upstreams of one configuration, started and closed together."""

    def __init__(self, settings: Mapping[str, UpstreamSettings], metrics: Metrics) -> None:
        self._upstreams = {name: build_upstream(name, spec, metrics) for name, spec in settings.items()}

    def __getitem__(self, name: str) -> Upstream:
        return self._upstreams[name]

    def __contains__(self, name: object) -> bool:
        return name in self._upstreams

    async def start(self) -> None:
        for upstream in self._upstreams.values():
            await upstream.start()

    async def close(self) -> None:
        for upstream in self._upstreams.values():
            await upstream.close()

    def scrub(self, text: str) -> str:
        for upstream in self._upstreams.values():
            text = upstream.scrub(text)
        return text

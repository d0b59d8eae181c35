"""Settings ``embedding: {upstream, model}`` are checked when loaded."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import Settings

BASE = {"upstreams": {"fake": {"base_url": "http://127.0.0.1:9/v1"}}, "default_upstream": "fake"}


def test_an_embedding_upstream_needs_a_model_and_must_exist() -> None:
    with pytest.raises(ValidationError, match=r"embedding\.upstream and embedding\.model go together"):
        Settings.model_validate({**BASE, "embedding": {"upstream": "fake"}})
    with pytest.raises(ValidationError, match=r"embedding\.upstream 'tei' is not one of the upstreams"):
        Settings.model_validate({**BASE, "embedding": {"upstream": "tei", "model": "bge"}})

    settings = Settings.model_validate({**BASE, "embedding": {"upstream": "fake", "model": "bge"}})
    assert (settings.embedding.upstream, settings.embedding.model) == ("fake", "bge")

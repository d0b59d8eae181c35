"""Which feedback values count as an experiment success: booleans as they are, numbers against the
experiment's threshold."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_config
from gateway.errors import InvalidRequest
from gateway.serving.feedback import counts_as_success, parse_feedback
from tests.conftest import write_files

SETTINGS = "upstreams:\n  main: {base_url: 'http://127.0.0.1:9/v1'}\ndefault_upstream: main\n"
VARIANTS = "variants: [{name: a, weight: 1}, {name: b, weight: 1}]\n"


def _policy(tmp_path: Path, experiment: str):  # type: ignore[no-untyped-def]
    write_files(tmp_path, {"prefit.yaml": SETTINGS, "policies/p.yaml": f"upstream_model: m\n{VARIANTS}{experiment}"})
    return load_config(tmp_path / "prefit.yaml").policies["p"]


def test_numbers_count_against_the_threshold(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "experiment: {metric: stars, threshold: 4}\n")
    assert counts_as_success(policy, 4.0) and counts_as_success(policy, 5)
    assert not counts_as_success(policy, 3.5)
    assert counts_as_success(policy, True) and not counts_as_success(policy, False)


def test_without_a_threshold_only_booleans_count(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "experiment: {metric: resolved}\n")
    with pytest.raises(InvalidRequest, match="threshold"):
        counts_as_success(policy, 1.0)


@pytest.mark.parametrize("raw", [b'{"request_id": "r", "metric": "m", "value": NaN}', b"[]", b""])
def test_unusable_bodies_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_feedback(raw)

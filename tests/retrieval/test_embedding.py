"""The bundled embedding model, for real: assembled offline, normalised, and semantically sensible."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from gateway.retrieval.embedding import DEFAULT_MODEL_NAME, MAX_TOKENS, Embedder, EmbeddingError, prepare_default_model


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def embedder(model_cache: Path) -> Embedder:
    embedder = Embedder(cache_dir=model_cache)
    embedder.load()
    return embedder


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_vectors_are_384_wide_and_unit_length(embedder: Embedder) -> None:
    vectors = embedder.embed(["How do I return a lamp?", "Shipping to Belgium takes two days.", "x"])

    assert embedder.dimension == 384
    assert [len(vector) for vector in vectors] == [384, 384, 384]
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, abs_tol=1e-3)


@pytest.mark.parametrize(
    ("anchor", "related", "unrelated"),
    [
        ("How do I return a product?", "What is the refund policy for returned items?", "The cat sat on the mat."),
        ("My parcel has not arrived yet.", "Where is my delivery? The package is late.", "Preheat the oven to 200."),
        ("I forgot my password.", "How can I reset my login credentials?", "Oak tables need hard-wax oil."),
        ("Can I pay with a credit card?", "Which payment methods do you accept?", "The river froze last winter."),
    ],
)
def test_related_sentences_score_well_above_unrelated_ones(
    embedder: Embedder, anchor: str, related: str, unrelated: str
) -> None:
    a, r, u = embedder.embed([anchor, related, unrelated])

    assert _cosine(a, r) > 0.35
    assert _cosine(a, r) - _cosine(a, u) > 0.3


def test_batches_and_single_texts_agree(embedder: Embedder) -> None:
    texts = [f"Order number {i} was shipped on day {i % 7}." for i in range(70)]  # three batches of 32

    together = embedder.embed(texts)
    alone = [embedder.embed([text])[0] for text in (texts[0], texts[40], texts[69])]

    for got, want in zip(alone, (together[0], together[40], together[69]), strict=True):
        assert _cosine(got, want) > 0.999


def test_long_text_is_truncated_not_rejected(embedder: Embedder) -> None:
    long = "returns " * 2000
    prefix = "returns " * 400  # already past 256 tokens: the rest is cut off

    full, cut = embedder.embed([long, prefix])

    assert _cosine(full, cut) > 0.999


def test_empty_input_gives_no_vectors(embedder: Embedder) -> None:
    assert embedder.embed([]) == []


async def test_aembed_runs_off_the_event_loop_and_matches_embed(embedder: Embedder) -> None:
    texts = ["Where is my order?", "Do you ship to Denmark?"]
    results: list[list[list[float]]] = []

    async def one() -> None:
        results.append(await embedder.aembed(texts))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(one)

    expected = embedder.embed(texts)
    assert len(results) == 8
    for result in results:
        assert all(_cosine(a, b) > 0.9999 for a, b in zip(result, expected, strict=True))


def test_model_folder_is_assembled_once_with_a_256_token_limit(embedder: Embedder, model_cache: Path) -> None:
    folder = model_cache / DEFAULT_MODEL_NAME
    manifest = (folder / "prefit-model.json").stat().st_mtime_ns

    again = prepare_default_model(model_cache)

    assert again == folder
    assert (folder / "prefit-model.json").stat().st_mtime_ns == manifest
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == MAX_TOKENS
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.onnx",
        "prefit-model.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    assert not [p for p in model_cache.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_model_dir_loads_any_onnx_folder(embedder: Embedder, model_cache: Path) -> None:
    other = Embedder(model_dir=model_cache / DEFAULT_MODEL_NAME)
    text = "Gift cards are valid for two years."

    assert other.dimension == 384
    assert _cosine(other.embed([text])[0], embedder.embed([text])[0]) > 0.9999


def test_a_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="does not exist"):
        Embedder(model_dir=tmp_path / "nowhere").load()


def test_no_network_is_touched_while_assembling_and_embedding(tmp_path: Path) -> None:
    """A fresh process with an audit hook that fails any socket use builds the folder and embeds."""
    script = textwrap.dedent(
        """
        import sys

        def refuse_network(event, args):
            if event.startswith("socket.") or event == "urllib.Request":
                raise RuntimeError(f"network access attempted: {event} {args!r}")

        sys.addaudithook(refuse_network)

        from gateway.retrieval.embedding import Embedder

        vectors = Embedder(cache_dir=sys.argv[1]).embed(["offline please"])
        print(len(vectors[0]))
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "FASTEMBED_"))}

    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "models")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "384"

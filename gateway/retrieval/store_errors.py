"""The vector store's errors, apart from the store itself: what fails can be named (and caught) without
importing qdrant-client, which costs more start-up time than the rest of the gateway together."""

from __future__ import annotations

__all__ = ["VectorStoreError", "VectorStoreLocked", "VectorStoreUnreachable", "mismatch"]


class VectorStoreError(RuntimeError):
    """The vector store cannot be opened or searched, or a collection does not fit the request."""


class VectorStoreLocked(VectorStoreError):
    """Another process holds the embedded storage folder."""


class VectorStoreUnreachable(VectorStoreError):
    """A Qdrant server did not answer: refused, unresolvable, or (``timed_out``) too slow."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def mismatch(name: str, recorded: str, current: str) -> str:
    """Why a collection cannot be used with this embedder."""
    return (
        f"collection {name!r} was made by embedder {recorded!r}, but this gateway embeds with {current!r}; "
        "vectors of two models cannot be compared: set embedding back, or ingest into a new collection"
    )

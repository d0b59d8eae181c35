"""The request's search query, embedded once per request however many layers search with it."""

from __future__ import annotations

from gateway.wire import ChatMessage
from middleware.base import Call, Resources

__all__ = ["query_text", "query_vector"]


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = [p.get("text") for p in message.content or [] if isinstance(p, dict) and p.get("type") == "text"]
    return " ".join(part for part in parts if isinstance(part, str))


def query_text(call: Call, mode: str = "last_user") -> str:
    """The last user message (``last_user``) or every user message joined (``all_user``)."""
    users = [_text(m) for m in call.body.messages if m.role == "user"]
    if not users:
        return ""
    return "\n".join(users) if mode == "all_user" else users[-1]


class _Vectors(dict[str, list[float]]):
    """Per-request memo of embedded query texts (kept in ``call.notes``)."""


async def query_vector(call: Call, resources: Resources, text: str) -> list[float]:
    """The embedding of ``text``, computed once per request. Raises ``ResourceError``."""
    memo: _Vectors = call.notes.setdefault(_Vectors, _Vectors())
    found = memo.get(text)
    if found is None:
        with call.timer("embed"):
            found = memo[text] = (await resources.embed([text]))[0]
    return found

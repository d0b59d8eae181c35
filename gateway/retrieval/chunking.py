"""Text into chunks for retrieval: sections by heading, then paragraphs and sentences, size-capped.

A retrieved passage is only useful if it holds one idea with its context, so chunks never cross a
heading (each carries its heading path), prefer paragraph and then sentence boundaries, stay under
a size cap, and repeat the end of the previous chunk of the same section as a little overlap.
HTML is first reduced to its visible text, with its headings turned into Markdown headings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser

__all__ = ["Chunk", "Chunking", "chunk_markdown", "html_to_markdown"]

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_HEADING_TAG = re.compile(r"h[1-6]")
_BLOCK_TAG = re.compile(
    r"address|article|aside|blockquote|d[dlt]|div|fig(?:caption|ure)|footer|form|header|hr|li|main|nav|ol|p|pre"
    r"|section|table|tr|ul"
)


@dataclass(frozen=True, slots=True)
class Chunking:
    """Chunk size cap and the overlap carried from one chunk into the next, in characters."""

    max_chars: int = 800
    overlap: int = 100

    def __post_init__(self) -> None:
        if self.max_chars < 100 or not 0 <= self.overlap <= self.max_chars // 2:
            raise ValueError("chunking needs max_chars >= 100 and 0 <= overlap <= max_chars / 2")


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of one section: its heading path (outermost first) and text."""

    path: tuple[str, ...]
    text: str

    @property
    def heading(self) -> str:
        return self.path[-1] if self.path else ""


def chunk_markdown(text: str, chunking: Chunking | None = None, *, headings: bool = True) -> list[Chunk]:
    """Cut Markdown into chunks within its sections, packing paragraphs up to the size cap.

    With ``headings=False`` (plain text) no line is taken for a heading: one section, paragraphs.
    """
    chunking = chunking or Chunking()
    # pieces leave room for the overlap, so every chunk after the first can start with one
    room = chunking.max_chars - chunking.overlap - 2 if chunking.overlap else chunking.max_chars
    chunks: list[Chunk] = []
    for path, blocks in _sections(_strip_front_matter(text) if headings else text, headings):
        pieces = [piece for block in blocks for piece in _fit(block, room)]
        chunks.extend(Chunk(path, body) for body in _pack(pieces, chunking))
    return chunks


def _strip_front_matter(text: str) -> str:
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            return text[end + 5 :]
    return text


def _sections(text: str, headings_on: bool) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """``(heading path, blocks)`` per section; a block is a paragraph, list or fenced code block."""
    headings: list[tuple[int, str]] = []
    blocks: list[str] = []
    lines: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        if fence is not None:
            lines.append(line)
            fence = None if line.lstrip().startswith(fence) else fence
            continue
        heading = _heading(line, lines) if headings_on else None
        if heading is not None:
            lines = lines[:-1] if heading[2] else lines  # a setext heading's text line is the heading
            _flush(lines, blocks)
            if blocks:
                yield tuple(title for _, title in headings), blocks
            blocks = []
            level, title = heading[0], heading[1]
            headings = [*(h for h in headings if h[0] < level), (level, title)]
        elif not line.strip():
            _flush(lines, blocks)
        else:
            if match := _FENCE.match(line):
                _flush(lines, blocks)
                fence = match.group(1)
            lines.append(line)
    _flush(lines, blocks)
    if blocks:
        yield tuple(title for _, title in headings), blocks


def _heading(line: str, lines: list[str]) -> tuple[int, str, bool] | None:
    """``(level, title, is_setext)`` when ``line`` closes a heading, else None."""
    if match := _ATX.match(line):
        return len(match.group(1)), match.group(2).strip(), False
    if len(lines) == 1 and (match := _SETEXT.match(line)) and lines[0].strip():
        return (1 if match.group(1).startswith("=") else 2), lines[0].strip(), True
    return None


def _flush(lines: list[str], blocks: list[str]) -> None:
    block = "\n".join(lines).strip()
    if block:
        blocks.append(block)
    lines.clear()


def _fit(block: str, max_chars: int) -> list[str]:
    """``block`` in pieces no longer than ``max_chars``: sentences packed, over-long ones cut at words."""
    if len(block) <= max_chars:
        return [block]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(block):
        for part in _cut(sentence, max_chars):
            if current and len(current) + 1 + len(part) > max_chars:
                pieces.append(current)
                current = ""
            current = f"{current} {part}" if current else part
    if current:
        pieces.append(current)
    return pieces


def _cut(sentence: str, max_chars: int) -> Iterator[str]:
    while len(sentence) > max_chars:
        cut = sentence.rfind(" ", 0, max_chars + 1)
        cut = cut if cut > 0 else max_chars
        yield sentence[:cut].strip()
        sentence = sentence[cut:].strip()
    if sentence:
        yield sentence


def _pack(pieces: list[str], chunking: Chunking) -> list[str]:
    """Join pieces into chunks up to the cap; each new chunk starts with the last one's tail."""
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 2 + len(piece) > chunking.max_chars:
            chunks.append(current)
            tail = _tail(current, chunking.overlap)
            current = tail if tail and len(tail) + 2 + len(piece) <= chunking.max_chars else ""
        current = f"{current}\n\n{piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


def _tail(text: str, overlap: int) -> str:
    """The last ``overlap`` characters of ``text``, started at a sentence (else a word) boundary."""
    if overlap == 0:
        return ""
    window = text[-overlap:]
    if len(text) > overlap:
        sentence = _SENTENCE_END.search(window)
        if sentence is not None and sentence.end() < len(window):
            return window[sentence.end() :].strip()
        space = window.find(" ")
        window = window[space + 1 :] if space != -1 else window
    return window.strip()


def html_to_markdown(html: str) -> str:
    """The visible text of an HTML page, with its headings as Markdown headings and blocks apart."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return parser.text()


class _HtmlText(HTMLParser):
    """Collects visible text; headings become ``#`` lines, blocks are set apart, list items start ``- ``."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skipping = 0
        self._title: list[str] | None = None
        self._title_text = ""
        self._has_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag == "title":
            self._title = []
        elif _HEADING_TAG.fullmatch(tag):
            self._has_h1 = self._has_h1 or tag == "h1"
            self._parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "br":
            self._parts.append("\n")
        elif _BLOCK_TAG.fullmatch(tag):
            self._parts.append("\n- " if tag == "li" else "\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag == "title" and self._title is not None:
            self._title_text, self._title = " ".join("".join(self._title).split()), None
        elif _HEADING_TAG.fullmatch(tag) or (tag != "li" and _BLOCK_TAG.fullmatch(tag)):
            self._parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._title is not None:
            self._title.append(data)
        else:
            self._parts.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        body = "".join(self._parts)
        body = "\n".join(line.strip() for line in body.splitlines())
        if self._title_text and not self._has_h1:
            body = f"# {self._title_text}\n\n{body}"
        return re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"

"""Chunking: sections by heading, paragraphs and sentences kept whole, a size cap, and overlap."""

from __future__ import annotations

import itertools

import pytest

from gateway.retrieval.chunking import Chunking, chunk_markdown, html_to_markdown


def _sentences(count: int, word: str = "Sentence") -> str:
    return " ".join(f"{word} number {i} says something useful." for i in range(count))


def test_chunks_never_cross_a_heading_and_carry_its_path() -> None:
    text = "# Returns\n\nIntro.\n\n## Window\n\nThirty days.\n\n## Refunds\n\nFive days.\n\n# Shipping\n\nTwo days.\n"

    chunks = chunk_markdown(text)

    assert [(chunk.path, chunk.text) for chunk in chunks] == [
        (("Returns",), "Intro."),
        (("Returns", "Window"), "Thirty days."),
        (("Returns", "Refunds"), "Five days."),
        (("Shipping",), "Two days."),
    ]
    assert chunks[1].heading == "Window"


def test_small_paragraphs_are_packed_together_up_to_the_cap() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 30 for i in range(10)]

    chunks = chunk_markdown("\n\n".join(paragraphs), Chunking(max_chars=500, overlap=0))

    assert all(len(chunk.text) <= 500 for chunk in chunks)
    assert len(chunks) < len(paragraphs)
    assert all(text.strip() in " ".join(c.text for c in chunks) for text in paragraphs)


def test_long_paragraphs_split_at_sentences_with_overlap() -> None:
    chunks = chunk_markdown("# Policy\n\n" + _sentences(60), Chunking(max_chars=400, overlap=80))

    assert len(chunks) > 3
    assert all(len(chunk.text) <= 400 for chunk in chunks)
    assert all(chunk.text.endswith(".") for chunk in chunks)
    for before, after in itertools.pairwise(chunks):
        overlap = after.text.split("\n\n")[0]
        assert before.text.endswith(overlap)
        assert 0 < len(overlap) <= 80
        assert overlap[0].isupper()  # starts at a sentence


def test_a_word_longer_than_the_cap_is_cut() -> None:
    chunks = chunk_markdown("x" * 1000, Chunking(max_chars=300, overlap=0))

    assert [len(chunk.text) for chunk in chunks] == [300, 300, 300, 100]


def test_code_fences_keep_their_blank_lines_and_hashes() -> None:
    text = "# Setup\n\n```sh\n# not a heading\n\nmake install\n```\n\nDone."

    chunks = chunk_markdown(text)

    assert [chunk.path for chunk in chunks] == [("Setup",)]
    assert "# not a heading\n\nmake install" in chunks[0].text


def test_setext_headings_and_front_matter() -> None:
    text = "---\ntitle: Policies\n---\nReturns\n=======\n\nThirty days.\n\nRefunds\n-------\n\nFive days.\n"

    chunks = chunk_markdown(text)

    assert [(chunk.path, chunk.text) for chunk in chunks] == [
        (("Returns",), "Thirty days."),
        (("Returns", "Refunds"), "Five days."),
    ]


def test_plain_text_has_no_headings() -> None:
    chunks = chunk_markdown("# not a heading\n\nJust text.", headings=False)

    assert [(chunk.path, chunk.text) for chunk in chunks] == [((), "# not a heading\n\nJust text.")]


def test_html_keeps_visible_text_and_headings_only() -> None:
    html = """<html><head><title>Help</title><style>p { color: red }</style></head>
    <body><h1>Ship <em>fast</em></h1><p>Orders leave in <b>one</b> <i>day</i>.<br>Weekends too.</p>
    <ul><li>Tracked</li><li>Insured &amp; signed</li></ul><script>track("x")</script>
    <h2>Costs</h2><div>Free above 60 euro.</div></body></html>"""

    text = html_to_markdown(html)

    assert text == (
        "# Ship fast\n\nOrders leave in one day.\nWeekends too.\n\n- Tracked\n- Insured & signed\n\n"
        "## Costs\n\nFree above 60 euro.\n"
    )
    assert [chunk.path for chunk in chunk_markdown(text)] == [("Ship fast",), ("Ship fast", "Costs")]


def test_html_title_stands_in_for_a_missing_h1() -> None:
    assert html_to_markdown("<title>Gift cards</title><p>Valid two years.</p>") == "# Gift cards\n\nValid two years.\n"


@pytest.mark.parametrize(("max_chars", "overlap"), [(50, 0), (800, 401), (800, -1)])
def test_bad_chunking_options_are_rejected(max_chars: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="max_chars"):
        Chunking(max_chars=max_chars, overlap=overlap)

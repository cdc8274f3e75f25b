"""Specification of vmem.assembly.split: streaming a document into pages of bounded size."""

from __future__ import annotations

import io
import re
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmem.assembly.split import MIN_MAX_TOKENS, SplitPage, split_pages
from vmem.assembly.tokens import Tokenizer, get_tokenizer
from vmem.errors import UsageError

TOK = get_tokenizer("cl100k_base")


def pages_of(text: str, max_tokens: int, tokenizer: Tokenizer = TOK) -> list[SplitPage]:
    return list(split_pages(io.StringIO(text, newline="\n"), max_tokens, tokenizer))


def non_ws(text: str) -> str:
    return re.sub(r"\s+", "", text)


def assert_valid_pages(pages: list[SplitPage], source: str, max_tokens: int) -> None:
    """The invariants every split must satisfy."""
    for p in pages:
        assert p.tokens == TOK.count(p.text), "tokens must be the exact count of the page text"
        assert p.tokens <= max_tokens
        assert p.text == p.text.strip() and p.text, "pages are stripped and non-empty"
    # Nothing lost, nothing added, nothing reordered (whitespace may change).
    assert non_ws("".join(p.text for p in pages)) == non_ws(source)


# --- document strategies ---------------------------------------------------------

# Prose without backticks or tildes, so no line accidentally opens a fence.
_prose_chars = st.sampled_from(list("abcdefghij klmnop  qrstuvwxyz.,;!?'\"()-é日本🙂#*0123"))
_word = st.text(_prose_chars, min_size=1, max_size=12)
_sentence = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(_word, min_size=1, max_size=15),
    st.sampled_from([".", "!", "?", "", ". "]),
)
_paragraph = st.builds(
    lambda lines: "\n".join(lines),
    st.lists(st.builds(" ".join, st.lists(_sentence, min_size=1, max_size=4)), min_size=1, max_size=4),
)
_heading = st.builds(
    lambda level, title: "#" * level + " " + title,
    st.integers(1, 6),
    st.text(st.sampled_from(list("abcXYZ 12")), min_size=1, max_size=20),
)
_code_line = st.text(st.sampled_from(list("abc(){}=;: 0123\t#.")), max_size=40)
_fence = st.builds(
    lambda marker, info, body: f"{marker}{info}\n" + "\n".join(body) + f"\n{marker}",
    st.sampled_from(["```", "~~~", "````"]),
    st.sampled_from(["", "python", " js"]),
    st.lists(_code_line, max_size=12),  # may contain blank lines
)
_long_run = st.builds(  # one unit far larger than a page, with no sentence or line end
    lambda ch, n: ch * n, st.sampled_from(["x", "é", "🙂", "日", "ab ", "\u0301"]), st.integers(50, 400)
)
_block = st.one_of(_paragraph, _paragraph, _heading, _fence, _long_run)


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A markdown-like document and the fenced code blocks in it."""
    blocks = draw(st.lists(_block, min_size=1, max_size=12))
    seps = draw(st.lists(st.sampled_from(["\n\n", "\n\n\n", "\n \n"]), min_size=len(blocks), max_size=len(blocks)))
    text = "".join(b + s for b, s in zip(blocks, seps, strict=True))
    fences = [b for b in blocks if b.startswith(("```", "~~~"))]
    return text, fences


_max_tokens = st.integers(MIN_MAX_TOKENS, 120)
_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- properties -------------------------------------------------------------------


@_settings
@given(documents(), _max_tokens)
def test_pages_fit_and_lose_nothing(doc: tuple[str, list[str]], max_tokens: int) -> None:
    text, _ = doc
    assert_valid_pages(pages_of(text, max_tokens), text, max_tokens)


@_settings
@given(st.text(max_size=600), _max_tokens)
def test_arbitrary_text_fits_and_loses_nothing(text: str, max_tokens: int) -> None:
    assert_valid_pages(pages_of(text, max_tokens), text, max_tokens)


@_settings
@given(documents(), _max_tokens)
def test_splitting_is_deterministic(doc: tuple[str, list[str]], max_tokens: int) -> None:
    text, _ = doc
    assert pages_of(text, max_tokens) == pages_of(text, max_tokens)


@_settings
@given(documents(), _max_tokens)
def test_code_fences_that_fit_are_never_split(doc: tuple[str, list[str]], max_tokens: int) -> None:
    text, fences = doc
    pages = pages_of(text, max_tokens)
    for fence in fences:
        if TOK.count(fence.strip()) <= max_tokens:
            assert any(fence.strip() in p.text for p in pages), f"fence split: {fence!r}"


@_settings
@given(documents(), _max_tokens, st.data())
def test_lines_may_arrive_in_arbitrary_pieces(
    doc: tuple[str, list[str]], max_tokens: int, data: st.DataObject
) -> None:
    # The stream is only required to concatenate to the document (iter_lines
    # delivers very long lines in pieces).
    text, _ = doc
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=20)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    pages = list(split_pages(iter(pieces), max_tokens, TOK))
    assert_valid_pages(pages, text, max_tokens)


# --- structure --------------------------------------------------------------------


def test_small_paragraphs_are_packed_into_one_page_joined_by_blank_lines() -> None:
    pages = pages_of("one.\n\n\n\ntwo\nlines.\n\nthree.\n", 100)
    assert [p.text for p in pages] == ["one.\n\ntwo\nlines.\n\nthree."]
    assert pages[0].heading == ""


def test_headings_start_pages_and_label_the_pages_below_them() -> None:
    text = "preface\n\n# Intro #\nhello\n\n## Details\n\nmore\n\n#not-a-heading\n"
    pages = pages_of(text, 100)
    assert [(p.heading, p.text) for p in pages] == [
        ("", "preface"),
        ("Intro", "# Intro #\n\nhello"),  # units are joined by a blank line
        ("Details", "## Details\n\nmore\n\n#not-a-heading"),
    ]


def test_heading_inside_a_code_fence_is_code() -> None:
    text = "# Real\n\n```sh\n# just a comment\n\necho hi\n```\n"
    pages = pages_of(text, 100)
    assert [p.heading for p in pages] == ["Real"]
    assert "```sh\n# just a comment\n\necho hi\n```" in pages[0].text


def test_unclosed_fence_runs_to_the_end() -> None:
    text = "~~~\ncode\n\n# not a heading\n"
    pages = pages_of(text, 100)
    assert [(p.heading, p.text) for p in pages] == [("", "~~~\ncode\n\n# not a heading")]


def test_fence_too_large_is_split_at_line_ends() -> None:
    body = "\n".join(f"x{i} = compute({i}) + offset" for i in range(60))
    pages = pages_of(f"```python\n{body}\n```\n", 40)
    assert len(pages) > 2
    assert_valid_pages(pages, f"```python\n{body}\n```", 40)
    for p in pages:  # no line of code is cut in the middle
        for line in p.text.splitlines():
            assert line in body.splitlines() or line in ("```python", "```")


def test_oversized_paragraph_is_split_at_sentence_ends() -> None:
    sentences = [f"Sentence number {i} says something short." for i in range(40)]
    text = " ".join(sentences)
    pages = pages_of(text, 50)
    assert len(pages) > 3
    assert_valid_pages(pages, text, 50)
    assert all(p.text.endswith(".") for p in pages)


def test_unbroken_text_is_cut_hard_without_corrupting_characters() -> None:
    text = "🙂é日" * 2000  # multi-byte characters whose tokens split their bytes
    pages = pages_of(text, 32)
    assert_valid_pages(pages, text, 32)
    assert "".join(p.text for p in pages) == text
    assert all("\ufffd" not in p.text for p in pages)
    assert max(p.tokens for p in pages) >= 28, "hard cuts should fill pages"


def test_parts_carried_over_after_a_low_estimate_are_not_lost() -> None:
    # Found by hypothesis: the joined page counted more than the sum of its
    # parts, so the last part moved to the next page, which must still be
    # emitted when it is the last one.
    text = "0 ; 0;0 0;0;0; 0;0;0;0; 0;0;0;0;0. 0 0;0;0;0;0 0;?0;0;0;.\n \n# 1X\n\n"
    pages = list(split_pages(iter([text]), 30, TOK))  # one "line": one unit
    assert_valid_pages(pages, text, 30)
    assert pages[-1].text.endswith("# 1X")


def test_special_token_text_is_plain_text() -> None:
    text = "<|endoftext|> is just text here.\n\n<|fim_prefix|>"
    pages = pages_of(text, 64)
    assert [p.text for p in pages] == ["<|endoftext|> is just text here.\n\n<|fim_prefix|>"]


def test_whitespace_only_input_gives_no_pages() -> None:
    assert pages_of("", 32) == []
    assert pages_of("\n\n  \n\t\n", 32) == []


@pytest.mark.parametrize("bad", [15, 0, -1])
def test_max_tokens_below_16_is_a_usage_error_at_call_time(bad: int) -> None:
    with pytest.raises(UsageError, match="at least 16"):
        split_pages(iter(["text\n"]), bad, TOK)  # raised before iteration


def test_works_with_any_tokenizer() -> None:
    class Chars:
        """One token per character: a tokenizer nothing like BPE."""

        name = "chars"

        def count(self, text: str) -> int:
            return len(text)

        def encode(self, text: str) -> list[int]:
            return [ord(c) for c in text]

        def decode(self, ids: list[int]) -> str:
            return "".join(map(chr, ids))

    text = "# H\n\nabc def. ghi jkl!\n\n" + "z" * 100
    pages = list(split_pages(io.StringIO(text), 16, Chars()))
    assert all(len(p.text) == p.tokens <= 16 for p in pages)
    assert non_ws("".join(p.text for p in pages)) == non_ws(text)


# --- bounded memory -----------------------------------------------------------------

_STREAM_BYTES = 50 * 2**20


def _generated_lines(total_bytes: int) -> Iterator[str]:
    """A ~50 MB markdown stream, produced lazily, deterministic."""
    size = 0
    i = 0
    while size < total_bytes:
        if i % 97 == 0:
            chunk = [f"## Section {i}\n", "\n"]
        elif i % 31 == 0:
            chunk = ["```python\n", f"def f{i}(x):\n", "\n", f"    return x * {i}\n", "```\n", "\n"]
        elif i % 53 == 0:
            # A paragraph far larger than a page, with no sentence end.
            chunk = [("lorem ipsum " * 40 + "\n") for _ in range(20)] + ["\n"]
        else:
            chunk = [
                f"Paragraph {i} starts here. It talks about topic {i % 17} at some length, "
                "with commas, clauses and a closing remark.\n",
                "A second line of the same paragraph follows it.\n",
                "\n",
            ]
        for line in chunk:
            size += len(line)
            yield line
        i += 1


@pytest.mark.slow
def test_a_50mb_stream_is_split_with_bounded_memory() -> None:
    max_tokens = 512
    pages = 0
    total_tokens = 0
    TOK.count("load the encoding before measuring")  # its tables are not per-split memory
    tracemalloc.start()
    try:
        for page in split_pages(_generated_lines(_STREAM_BYTES), max_tokens, TOK):
            # Only spot-check exactness: a full re-count would double the runtime.
            if pages % 997 == 0:
                assert page.tokens == TOK.count(page.text)
            assert page.tokens <= max_tokens
            pages += 1
            total_tokens += page.tokens
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pages > 10_000
    assert total_tokens > 5_000_000
    assert peak < 20 * 2**20, f"peak Python memory {peak / 2**20:.1f} MiB"


def _one_paragraph(total_bytes: int) -> Iterator[str]:
    line = "a line of one endless paragraph, never a blank line or a full stop\n"
    for _ in range(total_bytes // len(line)):
        yield line


def _one_line(total_bytes: int) -> Iterator[str]:
    # As iter_lines delivers a line longer than its piece size: no newline.
    piece = "0123456789abcdefghij" * 50
    for _ in range(total_bytes // len(piece)):
        yield piece


@pytest.mark.parametrize("stream", [_one_paragraph, _one_line])
def test_a_huge_unit_is_not_held_whole(stream: Callable[[int], Iterator[str]]) -> None:
    total = 2 * 2**20
    TOK.count("load the encoding before measuring")
    tracemalloc.start()
    try:
        seen = 0
        for page in split_pages(stream(total), 256, TOK):
            assert page.tokens <= 256
            seen += len(page.text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen > total * 0.95
    assert peak < 2**20, f"peak Python memory {peak / 2**20:.1f} MiB for a {total >> 20} MiB unit"

"""Streaming ingest splitter: a stream of lines -> pages of at most N tokens.

Structure decides where pages break: a markdown heading starts a new page,
blank lines separate paragraphs, and a fenced code block is one unit.  Units
are packed into a page while it fits.  A unit too large for one page is cut
at sentence ends, then at line ends, and as a last resort at token
boundaries.  Every emitted page is re-counted as a whole, so
``page.tokens == tokenizer.count(page.text) <= max_tokens`` always holds.

Memory stays bounded by about one page plus one unit, and a unit is cut into
pieces once it is certainly too large for a page, so even a 50 MB file with
no blank line never sits in memory whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

import msgspec

from vmem.assembly.tokens import Tokenizer
from vmem.errors import UsageError

MIN_MAX_TOKENS = 16

# Headings are stored on every page below them; a runaway "# ..." line must
# not be copied into thousands of pages.
MAX_HEADING_CHARS = 200

# No cl100k token is longer than 128 bytes, and a character is at least one
# byte, so text of more than 128 * N characters has more than N tokens.  A
# unit buffer beyond this is certain to be cut, so cutting it early (at a
# line end) changes nothing but the memory held.
_MAX_TOKEN_CHARS = 128

_PAGE_SEP = "\n\n"

# CommonMark ATX heading: up to 3 spaces, 1-6 '#', then space or end of line;
# an optional closing run of '#' is not part of the title.
_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))??(?:[ \t]+#+)?[ \t]*")
_FENCE_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_FENCE_CLOSE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
# Cheap pre-filter: only a line starting like this can be a heading or fence,
# so most lines skip the detailed (allocating) checks.
_MARKUP_START = re.compile(r" {0,3}[#`~]")
# A sentence ends at . ! ? (plus closing quotes/brackets) before whitespace,
# or at a CJK full stop.  The whitespace stays with the sentence before it.
_SENTENCE_END = re.compile(r"[.!?][\"')\]\u2019\u201d]*\s+|[\u3002\uff01\uff1f]\s*")


class SplitPage(msgspec.Struct, frozen=True):
    """One page of ingested text.

    `tokens` is the exact token count of `text`; `heading` is the title of
    the nearest markdown heading at or above the page start ("" if none).
    """

    text: str
    tokens: int
    heading: str = ""


# --- units: the structural pieces of the document --------------------------


class _Unit(msgspec.Struct, frozen=True):
    text: str  # raw text, may carry surrounding whitespace
    code: bool = False  # a fenced code block: never cut at sentence ends
    heading: str | None = None  # set on a heading line: it starts a new page


def _heading_title(line: str) -> str | None:
    """The title of an ATX heading line, or None if `line` is not a heading."""
    m = _HEADING.fullmatch(line.rstrip("\r\n"))
    if m is None:
        return None
    return (m.group(2) or "").strip()[:MAX_HEADING_CHARS]


def _fence_open(line: str) -> str | None:
    """The fence marker (e.g. "```") opened by `line`, or None."""
    m = _FENCE_OPEN.fullmatch(line.rstrip("\r\n"))
    if m is None:
        return None
    marker, info = m.group(1), m.group(2)
    # CommonMark: a backtick fence's info string may not contain a backtick.
    if marker[0] == "`" and "`" in info:
        return None
    return marker


def _closes_fence(line: str, marker: str) -> bool:
    m = _FENCE_CLOSE.fullmatch(line.rstrip("\r\n"))
    return m is not None and m.group(1)[0] == marker[0] and len(m.group(1)) >= len(marker)


def _units(lines: Iterable[str], cap_chars: int) -> Iterator[_Unit]:
    """Group a line stream into paragraphs, fenced code blocks and headings.

    `lines` may deliver a long line in pieces: only text that starts a line
    is looked at for headings, fences and blank lines.  A buffer longer than
    `cap_chars` is yielded at the next line end, or at once past twice that
    (such a unit must be cut anyway; this only bounds memory).
    """
    buf: list[str] = []
    buf_chars = 0
    fence: str | None = None  # the open fence marker while inside a code block
    at_line_start = True

    def take(code: bool = False) -> Iterator[_Unit]:
        nonlocal buf_chars
        if buf:
            text = "".join(buf)
            buf.clear()
            buf_chars = 0
            if not text.isspace():
                yield _Unit(text, code=code)

    for line in lines:
        if not line:
            continue
        starts_line = at_line_start
        at_line_start = line.endswith(("\n", "\r"))
        if not starts_line:
            pass  # continuation of a line delivered in pieces
        elif fence is not None:
            if _MARKUP_START.match(line) and _closes_fence(line, fence):
                buf.append(line)
                fence = None
                yield from take(code=True)
                continue
        elif line.isspace():
            yield from take()
            continue
        elif _MARKUP_START.match(line):
            if (title := _heading_title(line)) is not None:
                yield from take()
                yield _Unit(line, heading=title)
                continue
            if (marker := _fence_open(line)) is not None:
                yield from take()
                fence = marker
        buf.append(line)
        buf_chars += len(line)
        # Prefer to cut at a line end; a single giant line is cut anyway.
        if buf_chars > cap_chars and (at_line_start or buf_chars > 2 * cap_chars):
            yield from take(code=fence is not None)
    # An unclosed fence runs to the end of the document, as in CommonMark.
    yield from take(code=fence is not None)


# --- packing: greedy, estimate first, exact count before emitting ----------


class _Packer:
    """Greedily packs parts into chunks of at most `max_tokens` exact tokens.

    Adding uses a cheap running estimate (sum of part counts); a chunk of
    several parts is counted exactly when emitted, and if the estimate was
    low, trailing parts are carried into the next chunk.  Every part must fit
    alone.
    """

    def __init__(self, tokenizer: Tokenizer, max_tokens: int, sep: str) -> None:
        self._tok = tokenizer
        self._max = max_tokens
        self._sep = sep
        self._sep_tokens = tokenizer.count(sep) if sep else 0
        self._parts: list[str] = []
        self._counts: list[int | None] = []  # exact tokens; None for whitespace
        self._est = 0

    def add(self, part: str, tokens: int) -> Iterator[tuple[str, int]]:
        """Add `part` (whose stripped text has exactly `tokens` tokens); yield finished chunks."""
        if not part or part.isspace():
            # Whitespace between contiguous slices keeps words apart; at the
            # start of a chunk it would be stripped anyway.
            if self._parts and not self._sep:
                self._parts.append(part)
                self._counts.append(None)
            return
        est = tokens
        if not self._sep and (part[0].isspace() or part[-1].isspace()):
            est += 1  # a newline or space at the edge usually costs a token
        if self._parts and self._est + self._sep_tokens + est > self._max:
            yield from self.flush()
        if self._parts:
            self._est += self._sep_tokens
        self._parts.append(part)
        self._counts.append(tokens)
        self._est += est

    def flush(self) -> Iterator[tuple[str, int]]:
        """Emit the current chunk (if any) as (stripped text, exact tokens).

        If the estimate was low, trailing parts stay behind as the start of
        the next chunk.
        """
        parts, counts = self._parts, self._counts
        self._parts, self._counts, self._est = [], [], 0
        carry: list[tuple[str, int | None]] = []
        while parts:
            text = self._sep.join(parts).strip()
            solid = [c for c in counts if c is not None]
            # One non-blank part: the text is exactly that part stripped,
            # whose exact count we already have.
            n = solid[0] if len(solid) == 1 else self._tok.count(text)
            if n <= self._max or len(solid) <= 1:
                if text:
                    yield text, n
                break
            carry.append((parts.pop(), counts.pop()))
        # Carried parts start the next chunk; `finish` drains them too.
        for part, tokens in reversed(carry):
            yield from self.add(part, tokens or 0)

    def finish(self) -> Iterator[tuple[str, int]]:
        """Emit everything held, including parts carried over by `flush`."""
        while self._parts:
            yield from self.flush()


# --- cutting units that are too large --------------------------------------

_Cutter = Callable[[str], list[str]]


def _cut_sentences(text: str) -> list[str]:
    parts: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        parts.append(text[start : m.end()])
        start = m.end()
    if start < len(text):
        parts.append(text[start:])
    return parts


def _cut_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class _Splitter:
    """Cuts text too large for one page into contiguous slices that fit."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int) -> None:
        self._tok = tokenizer
        self._max = max_tokens
        # Longer text cannot fit (see _MAX_TOKEN_CHARS); skipping its count
        # matters because BPE over one huge unbroken word is quadratic.
        self._max_chars = _MAX_TOKEN_CHARS * max_tokens

    def _measure(self, raw: str) -> int | None:
        """Exact tokens of `raw` stripped if that fits a page, else None."""
        if len(raw) > self._max_chars:
            return None
        n = self._tok.count(raw.strip())
        return n if n <= self._max else None

    def pieces(self, unit: _Unit) -> Iterator[tuple[str, int]]:
        """(stripped text, exact tokens) pieces of `unit`, in order, each fitting a page."""
        text = unit.text.strip()
        n = self._measure(text)
        if n is not None:
            if text:
                yield text, n
            return
        cutters: tuple[_Cutter, ...] = (
            (_cut_lines,) if unit.code else (_cut_sentences, _cut_lines)
        )
        # Re-join neighbouring slices (with their original whitespace) so a
        # long paragraph becomes few full pages, not one page per sentence.
        packer = _Packer(self._tok, self._max, sep="")
        for raw, tokens in self._slices(text, cutters, None):
            yield from packer.add(raw, tokens)
        yield from packer.finish()

    def _slices(
        self, raw: str, cutters: tuple[_Cutter, ...], tokens: int | None
    ) -> Iterator[tuple[str, int]]:
        """Contiguous slices of `raw` (joined they give `raw`), each fitting a page.

        `tokens` is ``self._measure(raw)``, already known to the caller.
        """
        if tokens is not None:
            yield raw, tokens
            return
        if not cutters:
            yield from self._hard(raw)
            return
        parts = cutters[0](raw)
        if len(parts) <= 1:
            yield from self._slices(raw, cutters[1:], None)
            return
        for group in self._groups(parts):
            yield from self._slices(group, cutters[1:], self._measure(group))

    def _groups(self, parts: list[str]) -> Iterator[str]:
        """Join neighbouring parts into groups of at most max_tokens / 4 UTF-8 bytes.

        A token is at least one byte, so a group surely fits a page, and
        counting groups instead of single lines saves most tokenizer calls
        on text with many short lines.  A quarter page keeps the grain fine
        enough for the packer to fill pages well.
        """
        budget = self._max // 4
        group: list[str] = []
        size = 0
        for part in parts:
            n = _utf8_len(part)
            if group and size + n > budget:
                yield "".join(group)
                group, size = [], 0
            group.append(part)
            size += n
        if group:
            yield "".join(group)

    def _hard(self, raw: str) -> Iterator[tuple[str, int]]:
        """Cut `raw` at token boundaries into slices of at most max_tokens tokens.

        Slices are taken from `raw` by character position (never from decoded
        ids), so a token that splits a multi-byte character cannot corrupt
        the text; decoding only estimates where the next cut falls.
        """
        # Encode a window, not the rest of `raw` (which may be megabytes):
        # start at a typical 8 characters per token and grow the window
        # while whole windows fit, up to the size that surely holds more
        # than max_tokens tokens.
        window = 8 * self._max
        window_cap = _MAX_TOKEN_CHARS * self._max + 1
        pos = 0
        while pos < len(raw):
            head = raw[pos : pos + window]
            ids = self._tok.encode(head)
            if len(ids) <= self._max:
                length = len(head)
                window = min(window * 2, window_cap)
            else:
                k = self._max
                prefix = self._tok.decode(ids[:k])
                # A cut inside a character decodes to U+FFFD; step back to
                # a cut that reproduces the source exactly.
                while k > 1 and not head.startswith(prefix):
                    k -= 1
                    prefix = self._tok.decode(ids[:k])
                length = len(prefix) if head.startswith(prefix) else 1
                # The next page is likely as dense as this one: a window a
                # bit larger than this page avoids encoding far too much.
                window = min(max(length + length // 2, 2 * self._max), window_cap)
            length = max(length, 1)
            # Re-tokenising a slice can differ from the slice of tokens;
            # shrink until the exact count fits.  One character is at most
            # 4 tokens (one per UTF-8 byte), below MIN_MAX_TOKENS, so this ends.
            while True:
                piece = raw[pos : pos + length]
                tokens = self._tok.count(piece.strip())
                if tokens <= self._max or length == 1:
                    break
                length = max(1, length - max(1, length // 8))
            yield piece, tokens
            pos += length


# --- public entry point -----------------------------------------------------


def split_pages(lines: Iterable[str], max_tokens: int, tokenizer: Tokenizer) -> Iterator[SplitPage]:
    """Split a stream of lines into pages of at most `max_tokens` tokens.

    `lines` is any iterable whose concatenation is the document, such as an
    open text file or :func:`vmem.assembly.text_input.iter_lines`.  Headings start pages,
    code fences stay whole when they fit, and units are packed while the page
    fits.  Each page is stripped, non-empty, and its `tokens` is the exact
    count of its text.  Raises UsageError if `max_tokens` is below 16.
    """
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise UsageError(f"max_tokens must be an integer, got {max_tokens!r}")
    if max_tokens < MIN_MAX_TOKENS:
        raise UsageError(
            f"max_tokens={max_tokens} is too small to split text into pages; "
            f"use at least {MIN_MAX_TOKENS}"
        )
    return _split(lines, max_tokens, tokenizer)


def _split(lines: Iterable[str], max_tokens: int, tokenizer: Tokenizer) -> Iterator[SplitPage]:
    # Separate from split_pages so argument errors raise at the call, not at
    # the first next().
    splitter = _Splitter(tokenizer, max_tokens)
    pages = _Packer(tokenizer, max_tokens, sep=_PAGE_SEP)
    heading = ""
    for unit in _units(lines, cap_chars=_MAX_TOKEN_CHARS * max_tokens):
        if unit.heading is not None:
            for text, tokens in pages.finish():
                yield SplitPage(text, tokens, heading)
            heading = unit.heading
        for piece, piece_tokens in splitter.pieces(unit):
            for text, tokens in pages.add(piece, piece_tokens):
                yield SplitPage(text, tokens, heading)
    for text, tokens in pages.finish():
        yield SplitPage(text, tokens, heading)

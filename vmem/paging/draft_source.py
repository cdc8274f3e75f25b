"""Blocks a decision may read before they are appended: the store, plus what the draft has written.

A turn is started and paged in by one transaction: the selection runs on the
draft state that already holds the turn's message, so it must see that
message's text and count too, although the store has not projected it yet.
"""

from __future__ import annotations

from collections.abc import Iterable

from vmem.assembly.pack import BlockSource
from vmem.assembly.tokens import Tokenizer
from vmem.schemas.events import BlockWritten
from vmem.storage.view import Draft


class DraftSource:
    """A :class:`~vmem.assembly.pack.BlockSource` over `source` and the blocks `draft` has added."""

    def __init__(self, source: BlockSource, draft: Draft) -> None:
        self._source = source
        self._draft = draft

    def _written(self) -> dict[str, BlockWritten]:
        return {e.block_id: e for e in self._draft.events if isinstance(e, BlockWritten)}

    def get_many(self, ns: str, bids: Iterable[str]) -> dict[str, BlockWritten]:
        bids = list(bids)
        written = self._written()
        out = self._source.get_many(ns, [b for b in bids if b not in written])
        out.update({b: written[b] for b in bids if b in written})
        return out

    def token_counts(self, ns: str, bids: Iterable[str], tokenizer: Tokenizer) -> dict[str, int]:
        bids = list(bids)
        written = self._written()
        out = self._source.token_counts(ns, [b for b in bids if b not in written], tokenizer)
        out.update({b: tokenizer.count(written[b].text) for b in bids if b in written})
        return out

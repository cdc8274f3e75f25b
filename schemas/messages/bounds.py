"""What every bus message shares: the bounds on what a caller may send, the annotated field types, and the tagged base."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from vmem.schemas.events import Event

MAX_NS = 129  # TENANT/AGENT: two tokens of at most 64 characters
MAX_QUERY = 16_384  # a question, a search query, a user message (characters)
MAX_TEXT = 1_048_576  # a model reply, a tool result (characters)
MAX_IDS = 512  # block ids in one request
MAX_BUDGET = 2_000_000  # prompt tokens: beyond any model window today
MIN_BUDGET = 64
MAX_LIMIT = 1_000  # search results
MAX_READ = 10_000  # events in one read
MAX_PAGES = 1_000  # pages in one ingest batch
MAX_PAGE_TEXT = 262_144  # characters of one page
MAX_CALLS = 64  # tool calls in one model reply
MAX_SLOT = 100_000  # characters a slot may hold
DEFAULT_SLOT_LIMIT = 2_000  # characters, when a slot is defined without a limit
MAX_LABEL = 64
MAX_SEQ = 2**63 - 1
MAX_TURN = 2**31 - 1

Ns = Annotated[str, Meta(min_length=3, max_length=MAX_NS)]
Query = Annotated[str, Meta(max_length=MAX_QUERY)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Name = Annotated[str, Meta(max_length=128)]
BlockRef = Annotated[str, Meta(max_length=64)]
BlockRefs = Annotated[tuple[BlockRef, ...], Meta(max_length=MAX_IDS)]
Budget = Annotated[int, Meta(ge=MIN_BUDGET, le=MAX_BUDGET)]
TurnNo = Annotated[int, Meta(ge=0, le=MAX_TURN)]
Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]
Count = Annotated[int, Meta(ge=0, le=2**31 - 1)]


class Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="msg", omit_defaults=True):
    """A tagged bus message: the ``msg`` field names its type, so any request or reply decodes from one union."""


class Candidate(msgspec.Struct, frozen=True, array_like=True):
    """A retrieval candidate: fused score and the per-retriever scores behind it."""

    block_id: str
    score: float
    scores: dict[str, float] = {}


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as read back from a log, with its sequence."""

    seq: int
    event: Event

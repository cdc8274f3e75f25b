"""Messages of the retriever, pager and packer: search, turns, packing, faults, eviction, pins."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from vmem.schemas.events import CandidateTrace
from vmem.schemas.messages.bounds import (
    MAX_LIMIT,
    BlockRefs,
    Budget,
    Candidate,
    Count,
    Msg,
    Name,
    Ns,
    Query,
    Seq,
    Text,
    TurnNo,
)


class SearchRequest(Msg, tag="search", kw_only=True):
    ns: Ns
    query: Query
    limit: Annotated[int, Meta(ge=1, le=MAX_LIMIT)] = 20
    exclude: BlockRefs = ()
    kinds: Annotated[tuple[Name, ...], Meta(max_length=16)] = (
        "page", "summary", "message", "fact", "tool_call", "tool_result",
    )


class SearchReply(Msg, tag="search_reply", kw_only=True):
    candidates: tuple[Candidate, ...]
    index_seq: int = 0
    errors: tuple[str, ...] = ()  # retrievers that failed or timed out


class SyncRequest(Msg, tag="sync", kw_only=True):
    """Bring the retriever's indexes up to the log's current end and commit (service-internal)."""

    ns: Ns


class SyncReply(Msg, tag="sync_reply", kw_only=True):
    through_seq: int
    indexed: int


class EmbedderRequest(Msg, tag="embedder", kw_only=True):
    """Which embedder the retriever uses for `ns` (checked against the one the namespace was indexed with)."""

    ns: Ns


class EmbedderReply(Msg, tag="embedder_reply", kw_only=True):
    embedder: Name  # the id of the embedder in use, e.g. "minilm-l6-v2/384"
    recorded: Name = ""  # the id recorded for the namespace ("" before its first indexing)


class ReindexRequest(Msg, tag="reindex", kw_only=True):
    """Rebuild `ns`'s vector index with the retriever's embedder and record it, one step per request.

    `start` drops the vectors and records the embedder; each later request
    (``start=False``) continues where the last one stopped, until the reply
    says `done`.  With `embedder`, the request is refused unless that is the
    id of the retriever's embedder (so a client cannot re-index with an
    embedder it did not mean).
    """

    ns: Ns
    start: bool = False
    embedder: Name = ""


class ReindexReply(Msg, tag="reindex_reply", kw_only=True):
    embedder: Name
    previous: Name = ""  # the embedder recorded before (start only)
    through_seq: Seq = 0  # log sequence the rebuilt vectors reach so far
    last_seq: Seq = 0  # the log's end: done when through_seq reaches it
    vectors: Count = 0  # vectors in the index so far
    done: bool = False


class TurnBegin(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What starts a turn: the user's message, and which kind of agent asks.

    `mode` picks the system prompt the pager pins on a namespace's first turn
    ("ask": answer from ingested pages; "chat": an agent with MemGPT-style
    memory, whose first turn also defines the default slots).  `key` makes a
    retried begin start one turn, not two.  `when` is wall-clock time for
    people and for date search, recorded on the message, never read by fold.
    """

    message: Query
    model: Name = "offline"
    mode: Literal["ask", "chat"] = "ask"
    when: Annotated[str, Meta(max_length=64)] = ""
    key: Annotated[str, Meta(max_length=128)] = ""


class TurnRequest(Msg, tag="turn", kw_only=True):
    """Prepare attempt `attempt` of turn `turn`: page in for `query`, pack the prompt.

    With `begin`, the pager first starts a new turn (its number is in the
    reply; `turn` is then ignored) from the user's message.
    """

    ns: Ns
    turn: TurnNo = 0
    attempt: Annotated[int, Meta(ge=0, le=1000)] = 0
    budget: Budget
    profile: Name = "offline"
    tokenizer: Name = "cl100k_base"
    query: Query = ""
    begin: TurnBegin | None = None


class PackRequest(Msg, tag="pack", kw_only=True):
    """Render and trace the prompt of one attempt (service-internal: the pager asks)."""

    ns: Ns
    turn: TurnNo
    attempt: Annotated[int, Meta(ge=0, le=1000)]
    budget: Budget
    profile: Name = "offline"
    tokenizer: Name = "cl100k_base"
    candidates: tuple[CandidateTrace, ...] = ()  # the pager's selection, for the trace
    retriever_errors: tuple[str, ...] = ()


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A function call a model made: `arguments` is the JSON text exactly as it produced it."""

    id: Annotated[str, Meta(max_length=256)]
    name: Name
    arguments: Text


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One role-tagged message of a packed prompt.

    `role` is system, user, assistant or tool.  An assistant message may carry
    `tool_calls`; a tool message answers one call (`tool_call_id`).
    `cache_boundary` marks the end of the stable, cacheable prefix.
    """

    role: str
    content: str
    cache_boundary: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


class PackReply(Msg, tag="pack_reply", kw_only=True):
    prompt: str
    messages: tuple[ChatMessage, ...]
    prompt_sha256: str
    prompt_tokens: int
    resident: tuple[str, ...]
    trace_seq: int = 0
    turn: int = 0
    # Set by the pager when the turn began with an implicit page fault.
    fault: bool = False
    loaded: tuple[str, ...] = ()
    evicted: tuple[str, ...] = ()
    summaries: tuple[str, ...] = ()


class EvictRequest(Msg, tag="evict", kw_only=True):
    """Ask the pager to evict blocks (refused for pinned ones)."""

    ns: Ns
    turn: TurnNo = 0
    block_ids: BlockRefs


class EvictReply(Msg, tag="evict_reply", kw_only=True):
    evicted: tuple[str, ...]
    refused: tuple[str, ...] = ()
    error: str = ""
    summaries: tuple[str, ...] = ()


class FaultRequest(Msg, tag="fault", kw_only=True):
    """Page in what a query finds and/or named blocks.  `turn` 0: the namespace's current turn."""

    ns: Ns
    fault_id: Annotated[str, Meta(min_length=1, max_length=128)]
    turn: TurnNo = 0
    budget: Budget
    query: Query = ""
    block_ids: BlockRefs = ()
    tokenizer: Name = "cl100k_base"


class FaultReply(Msg, tag="fault_reply", kw_only=True):
    loaded: tuple[str, ...]
    evicted: tuple[str, ...]
    summaries: tuple[str, ...] = ()
    error: str = ""


class PinRequest(Msg, tag="pin", kw_only=True):
    """Pin blocks (resident, never evicted) or, with ``pin=False``, unpin them."""

    ns: Ns
    block_ids: BlockRefs
    pin: bool = True
    turn: TurnNo = 0


class PinReply(Msg, tag="pin_reply", kw_only=True):
    changed: tuple[str, ...]
    unknown: tuple[str, ...] = ()

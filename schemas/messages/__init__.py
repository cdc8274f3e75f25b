"""Bus messages between clients and actors: requests, replies, notifications, as frozen Structs.

Requests go to ``vmem.<tenant>.<agent>.<actor>.<verb>``; every reply is a
:data:`Reply` (the answer type or an :class:`ErrorReply`), so a caller always
learns what went wrong on the other side.  Every field a caller controls is
bounded (lengths, counts, budgets): an oversize or malformed request is
refused while it is decoded, before any actor code runs.  ``vmem schema``
prints all of this as JSON Schema; a request may be sent as msgpack or as
JSON (the reply comes back in the same encoding).

The messages live by the actor that answers them (:mod:`.paging`,
:mod:`.reducer`, :mod:`.memory`, :mod:`.reading`, :mod:`.jobs`), on the
bounds and base in :mod:`.bounds`; every name is importable from here.
"""

from __future__ import annotations

from typing import Union

from vmem.schemas.messages.bounds import (  # noqa: F401  (re-exported)
    DEFAULT_SLOT_LIMIT,
    MAX_BUDGET,
    MAX_CALLS,
    MAX_IDS,
    MAX_LABEL,
    MAX_LIMIT,
    MAX_NS,
    MAX_PAGE_TEXT,
    MAX_PAGES,
    MAX_QUERY,
    MAX_READ,
    MAX_SEQ,
    MAX_SLOT,
    MAX_TEXT,
    MAX_TURN,
    MIN_BUDGET,
    BlockRef,
    BlockRefs,
    Budget,
    Candidate,
    Count,
    Msg,
    Name,
    Ns,
    Query,
    Seq,
    StoredEvent,
    Text,
    TurnNo,
)
from vmem.schemas.messages.jobs import (  # noqa: F401  (re-exported)
    CompressDone,
    CompressJob,
    ErrorReply,
    EventsCommitted,
)
from vmem.schemas.messages.memory import (  # noqa: F401  (re-exported)
    Ack,
    ExportReply,
    ExportRequest,
    GrantRequest,
    ImportReply,
    ImportRequest,
    IngestReply,
    IngestRequest,
    PageIn,
    PermissionsRequest,
    SlotRequest,
    Snapshot,
)
from vmem.schemas.messages.paging import (  # noqa: F401  (re-exported)
    ChatMessage,
    EmbedderReply,
    EmbedderRequest,
    EvictReply,
    EvictRequest,
    FaultReply,
    FaultRequest,
    PackReply,
    PackRequest,
    PinReply,
    PinRequest,
    ReindexReply,
    ReindexRequest,
    SearchReply,
    SearchRequest,
    SyncReply,
    SyncRequest,
    ToolCall,
    TurnBegin,
    TurnRequest,
)
from vmem.schemas.messages.reading import (  # noqa: F401  (re-exported)
    BlockReply,
    BlockRequest,
    NamespacesReply,
    NamespacesRequest,
    PromptReply,
    PromptRequest,
    ReadReply,
    ReadRequest,
    ReplayReport,
    ReplayRequest,
    Slot,
    StateReply,
    StateRequest,
    TailRequest,
    TracesReply,
    TracesRequest,
)
from vmem.schemas.messages.reducer import (  # noqa: F401  (re-exported)
    EndTurnReply,
    EndTurnRequest,
    ReduceReply,
    ReduceRequest,
    ToolResultsReply,
    ToolResultsRequest,
)

Request = Union[
    SearchRequest, SyncRequest, PackRequest, TurnRequest, FaultRequest, EvictRequest, PinRequest, ReduceRequest,
    ToolResultsRequest, EndTurnRequest, IngestRequest, SlotRequest, PermissionsRequest, GrantRequest,
    ExportRequest, ImportRequest, ReadRequest, TailRequest, BlockRequest, TracesRequest, StateRequest,
    ReplayRequest, NamespacesRequest, PromptRequest, CompressJob, EmbedderRequest, ReindexRequest,
]
Reply = Union[
    SearchReply, SyncReply, PackReply, FaultReply, EvictReply, PinReply, ReduceReply, ToolResultsReply,
    EndTurnReply, IngestReply, Ack, ExportReply, ImportReply, ReadReply, BlockReply, TracesReply, StateReply,
    ReplayReport, NamespacesReply, PromptReply, CompressDone, EmbedderReply, ReindexReply, ErrorReply,
]
REQUEST_TYPES: tuple[type, ...] = Request.__args__  # type: ignore[attr-defined]
REPLY_TYPES: tuple[type, ...] = Reply.__args__  # type: ignore[attr-defined]

"""The public async API: a client of the actors, over a bus.

Every state change is a typed request to the actor that owns it, which
checks it against the namespace (and tenant) it arrived under and appends
the events; every read is a request too.  The client holds no log and no
store, so it is the same in both modes: embedded (``Vmem.open``: the actors
run in this process on an in-process bus) and distributed (``Vmem.connect``:
the actors run in ``vmem serve`` processes, reached over NATS with nothing
but a URL and credentials).  Works under asyncio and trio (NATS: asyncio).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec

from vmem.agent.chat import MAX_STEPS, ChatResult, StepOutcome, chat_turn, submit_step
from vmem.agent.tools import AgentTool
from vmem.assembly.ingest import DEFAULT_PAGE_TOKENS, ingest_requests
from vmem.assembly.profiles import DEFAULT_BUDGET, ModelProfile, get_profile, profile_for_budget
from vmem.assembly.text_input import DEFAULT_MAX_BYTES
from vmem.assembly.tokens import get_tokenizer
from vmem.assembly.trace_diff import TraceDiff, diff_traces
from vmem.bus.bus import Bus
from vmem.bus.rpc import call
from vmem.bus.subjects import Subjects
from vmem.errors import SchemaError, UsageError
from vmem.models.model import Model, ModelReply
from vmem.models.offline import OfflineModel
from vmem.paging.handoff import grants_ns
from vmem.schemas.codec import decode
from vmem.schemas.events import EVENT_BY_TAG, BlockWritten, PromptPacked
from vmem.schemas.messages import (
    DEFAULT_SLOT_LIMIT,
    Ack,
    BlockReply,
    BlockRequest,
    EndTurnReply,
    EndTurnRequest,
    EventsCommitted,
    EvictReply,
    EvictRequest,
    ExportReply,
    ExportRequest,
    FaultReply,
    FaultRequest,
    GrantRequest,
    ImportReply,
    ImportRequest,
    IngestReply,
    NamespacesReply,
    NamespacesRequest,
    PackReply,
    PermissionsRequest,
    PinReply,
    PinRequest,
    ReadReply,
    ReadRequest,
    ReduceReply,
    ReduceRequest,
    ReplayReport,
    ReplayRequest,
    SearchReply,
    SearchRequest,
    Slot,
    SlotRequest,
    Snapshot,
    StateReply,
    StateRequest,
    StoredEvent,
    TailRequest,
    ToolResultsReply,
    ToolResultsRequest,
    TracesReply,
    TracesRequest,
    TurnBegin,
    TurnRequest,
)
from vmem.state.namespace import validate_namespace

R = TypeVar("R")
MAX_FAULTS = 3
TENANT_AGENT = "_tenant"
WATCH_POLL_S = 1.0  # watchers read what notifications missed at least this often
LONG_TIMEOUT = 3600.0  # ingest (indexing) and replay of a large namespace


class IngestResult(msgspec.Struct, frozen=True):
    ns: str
    doc_id: str
    pages: int
    bytes: int
    events: int
    duplicate: bool


class AskResult(msgspec.Struct, frozen=True):
    """The outcome of one turn (the JSON of ``vmem ask --json``)."""

    ns: str
    turn: int
    answer: str
    cited: tuple[str, ...]
    answered: bool
    attempts: int
    faults: int
    evictions: int
    loaded: tuple[str, ...]
    evicted: tuple[str, ...]
    summaries: tuple[str, ...]
    prompt_sha256: str
    prompt_tokens: int
    budget: int


def resolve_profile(budget: int | None, profile: ModelProfile | str | None, model_name: str) -> ModelProfile:
    """The profile a turn runs with: a built-in or given profile, or one of exactly `budget` tokens."""
    if isinstance(profile, str):
        profile = get_profile(profile)
    if profile is None:
        if budget is None:
            raise UsageError("give a token budget or a model profile")
        return profile_for_budget(budget, name=model_name)
    if budget is not None and budget != profile.budget:
        raise UsageError(f"budget {budget} disagrees with profile {profile.name!r} (budget {profile.budget}); give one")
    return profile


class Client:
    """vmem's API on a bus: every method is a request to an actor (see the module docstring)."""

    def __init__(self, bus: Bus, *, timeout: float = 30.0, subjects: Subjects | None = None) -> None:
        self.bus = bus
        self.timeout = timeout
        self.subjects = subjects or Subjects()

    async def _call(self, ns: str, actor: str, verb: str, request: Any, reply_type: type[R], *, timeout: float | None = None) -> R:
        validate_namespace(ns)
        return await call(self.bus, self.subjects.request(ns, actor, verb), request, reply_type, timeout=timeout or self.timeout)

    # -- documents -------------------------------------------------------------

    async def ingest(
        self,
        ns: str,
        path: str | Path,
        *,
        page_tokens: int = DEFAULT_PAGE_TOKENS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        progress: Callable[[int, int], None] | None = None,
    ) -> IngestResult:
        """Split a UTF-8 text file into pages and send them to `ns`'s memory actor, batch by batch."""
        validate_namespace(ns)
        tok = get_tokenizer("cl100k_base")
        events = pages = 0
        duplicate = True
        doc_id = ""
        size = 0
        for batch in ingest_requests(ns, Path(path), tok, page_tokens=page_tokens, max_bytes=max_bytes):
            reply = await self._call(ns, "memory", "ingest", batch.request, IngestReply, timeout=LONG_TIMEOUT)
            duplicate = duplicate and reply.duplicate
            events += reply.events
            pages += reply.pages
            doc_id = batch.request.doc_id
            size = batch.bytes_read
            if progress is not None:
                progress(batch.bytes_read, size)
        return IngestResult(ns=ns, doc_id=doc_id, pages=pages, bytes=size, events=events, duplicate=duplicate)

    # -- turns -----------------------------------------------------------------

    async def ask(
        self,
        ns: str,
        question: str,
        *,
        budget: int | None = None,
        profile: ModelProfile | str | None = None,
        model: Model | None = None,
        max_faults: int = MAX_FAULTS,
        prefetch: bool = True,
    ) -> AskResult:
        """Run one turn: pack, call the model, reduce, and resolve page faults (bounded).

        The prompt budget is `budget` tokens, or the `profile`'s window minus
        its reserved output; the profile's tokenizer counts them exactly.
        With `prefetch` (the default) the pager pages in for the question
        before the model sees it; without, paging is on demand: only the
        model's page faults load anything.  A turn answered at once costs two
        requests: the pager's (start, page in, pack) and the reducer's; each
        further attempt one more (the reducer resolves the fault and packs).
        """
        question = question.strip()
        if not question:
            raise UsageError("the question is empty; ask something")
        validate_namespace(ns)
        model = model or OfflineModel()
        prof = resolve_profile(budget, profile, model.name)
        begin = TurnBegin(message=question, model=model.name, mode="ask", key=uuid.uuid4().hex)
        faults = 0
        loaded: list[str] = []
        evicted: list[str] = []
        summaries: list[str] = []
        answer, cited, answered = "", (), False
        packed = await self._call(ns, "pager", "turn", TurnRequest(
            ns=ns, budget=prof.budget, profile=prof.name, tokenizer=prof.tokenizer,
            query=question if prefetch else "", begin=begin,
        ), PackReply)
        turn = packed.turn
        attempt = 0
        for attempt in range(max_faults + 1):
            if packed.fault:
                faults += 1
                loaded += packed.loaded
                evicted += packed.evicted
                summaries += packed.summaries
            reply = await model.complete(packed.prompt, packed.messages)
            # Resolves a fault the reply asks for and packs the next attempt: one round trip an attempt.
            red = await self._call(ns, "reducer", "reduce", ReduceRequest(
                ns=ns, turn=turn, attempt=attempt, model=model.name, text=reply.text, input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens, budget=prof.budget, tokenizer=prof.tokenizer, profile=prof.name,
                pack_next=attempt < max_faults,
            ), ReduceReply)
            if red.outcome == "answer":
                answer, cited, answered = red.answer, red.cited, True
                break
            if red.fault is not None:
                faults += 1
                loaded += red.fault.loaded
                evicted += red.fault.evicted
                summaries += red.fault.summaries
            if red.next is None:
                break
            packed = red.next
        if not answered:
            answer = f"No answer: the pages faulted in over {attempt + 1} attempts did not hold it."
            await self.end_turn(ns, turn, answer)
        return AskResult(
            ns=ns, turn=turn, answer=answer, cited=tuple(cited), answered=answered, attempts=attempt + 1,
            faults=faults, evictions=len(evicted), loaded=tuple(loaded), evicted=tuple(evicted),
            summaries=tuple(summaries), prompt_sha256=packed.prompt_sha256, prompt_tokens=packed.prompt_tokens,
            budget=prof.budget,
        )

    async def chat(
        self,
        ns: str,
        message: str,
        *,
        budget: int | None = None,
        profile: ModelProfile | str | None = None,
        model: Model | None = None,
        tools: Sequence[AgentTool] = (),
        when: str = "",
        max_steps: int = MAX_STEPS,
    ) -> ChatResult:
        """One chat turn of an agent with MemGPT-style memory (see :mod:`vmem.agent.chat`).

        `tools` are the agent's own tools; `when` is the message's wall-clock
        time, recorded for people and for date search (never read by fold).
        Works on a new namespace: the first turn creates it.
        """
        validate_namespace(ns)
        if not message.strip():
            raise UsageError("the message is empty; say something")
        model = model or OfflineModel()
        prof = resolve_profile(budget, profile, model.name)
        return await chat_turn(self, ns, message.strip(), model=model, profile=prof, tools=tools, when=when,
                               max_steps=max_steps)

    # The chat turn in steps, for agent frameworks that run the loop themselves
    # (see examples/langgraph-agent): begin_turn, then pack_step / the model /
    # submit_step until done, then end_turn if the reducer did not end it.

    async def begin_turn(self, ns: str, message: str, *, profile: ModelProfile, model_name: str, when: str = "",
                         query: str | None = None) -> PackReply:
        """Start a chat turn with the user's message and pack its first step (the reply's `turn`)."""
        validate_namespace(ns)
        message = message.strip()
        if not message:
            raise UsageError("the message is empty; say something")
        begin = TurnBegin(message=message, model=model_name, mode="chat", when=when, key=uuid.uuid4().hex)
        return await self._call(ns, "pager", "turn", TurnRequest(
            ns=ns, attempt=0, budget=profile.budget, profile=profile.name, tokenizer=profile.tokenizer,
            query=message if query is None else query, begin=begin,
        ), PackReply)

    async def pack_step(self, ns: str, turn: int, step: int, *, profile: ModelProfile, query: str = "") -> PackReply:
        """The packed prompt (string and chat messages) for one step of a turn."""
        return await self._call(ns, "pager", "turn", TurnRequest(
            ns=ns, turn=turn, attempt=step, budget=profile.budget, profile=profile.name, tokenizer=profile.tokenizer,
            query=query if step == 0 else "",
        ), PackReply)

    async def reduce(self, ns: str, turn: int, step: int, reply: ModelReply, *, model_name: str, profile: ModelProfile,
                     agent_tools: Sequence[str] = (), when: str = "", pack_next: bool = False) -> ReduceReply:
        """Hand one model reply to the reducer (a page fault it asks for is resolved before it answers).

        With `pack_next`, a reply that leaves the turn open (and no agent tool
        to run) comes back with the next step's prompt (`ReduceReply.next`).
        """
        return await self._call(ns, "reducer", "reduce", ReduceRequest(
            ns=ns, turn=turn, attempt=step, model=model_name, text=reply.text, tool_calls=reply.tool_calls,
            agent_tools=tuple(agent_tools), input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
            when=when, budget=profile.budget, tokenizer=profile.tokenizer, profile=profile.name, pack_next=pack_next,
        ), ReduceReply)

    async def tool_results(self, ns: str, turn: int, results: Sequence[tuple[str, str]]) -> ToolResultsReply:
        """Record the results of the agent's own tools (call id, content)."""
        return await self._call(ns, "reducer", "tool_results",
                                ToolResultsRequest(ns=ns, turn=turn, results=tuple(results)), ToolResultsReply)

    async def submit_step(
        self, ns: str, turn: int, step: int, reply: ModelReply, *, model_name: str, profile: ModelProfile,
        tools: Sequence[AgentTool] = (), when: str = "",
    ) -> StepOutcome:
        """Validate and apply one model reply; runs the agent's tools and resolves faults."""
        return await submit_step(self, ns, turn, step, reply, model_name=model_name, profile=profile, tools=tools, when=when)

    async def end_turn(self, ns: str, turn: int, reply: str) -> None:
        """Close a turn the reducer did not close (see StepOutcome.ended)."""
        await self._call(ns, "reducer", "end", EndTurnRequest(ns=ns, turn=turn, answer=reply), EndTurnReply)

    # -- working context, permissions, hand-offs, grants -------------------------

    async def slots(self, ns: str) -> dict[str, Slot]:
        """The working context of `ns`: each slot's value, version, limit and whether it is read-only."""
        return dict((await self.state(ns)).slots)

    async def define_slot(self, ns: str, label: str, *, limit: int = DEFAULT_SLOT_LIMIT, value: str = "", readonly: bool = False) -> None:
        """Create (or redefine) a working-context slot."""
        validate_namespace(ns)
        await self._call(ns, "memory", "slot", SlotRequest(ns=ns, label=label, limit=limit, value=value, readonly=readonly), Ack)

    async def set_permissions(self, ns: str, allowed: Sequence[str]) -> None:
        """Limit the memory functions the model may call in `ns` (empty: all of them)."""
        validate_namespace(ns)
        await self._call(ns, "memory", "permissions", PermissionsRequest(ns=ns, allowed=tuple(allowed)), Ack)

    async def handoff_export(self, ns: str) -> Snapshot:
        """A snapshot of pointers (resident ids, summaries, slot versions), recorded as an event."""
        validate_namespace(ns)
        return (await self._call(ns, "memory", "export", ExportRequest(ns=ns), ExportReply)).snapshot

    async def handoff_import(self, snap: Snapshot, ns: str) -> int:
        """Import another agent's snapshot into `ns`; its blocks page in lazily.  Returns the pointers taken.

        Only the snapshot's id and source are sent: the pointers come from the
        export the source recorded under that id.
        """
        validate_namespace(ns)
        if snap.source_ns == ns:
            raise UsageError(f"{ns} cannot import its own hand-off")
        reply = await self._call(ns, "memory", "import",
                                 ImportRequest(ns=ns, source_ns=snap.source_ns, snapshot_id=snap.snapshot_id), ImportReply)
        return reply.pointers

    async def grant(self, tenant: str, to_tenant: str, *, agents: str = "*") -> None:
        """Let `to_tenant` import hand-offs from `tenant`'s agents (an event in `tenant/_grants`)."""
        ns = grants_ns(tenant)
        validate_namespace(ns)
        await self._call(ns, "memory", "grant", GrantRequest(ns=ns, to_tenant=to_tenant, agents=agents), Ack)

    async def revoke(self, tenant: str, to_tenant: str) -> None:
        """Withdraw a grant; later imports, and page-ins of earlier ones, into `to_tenant` are refused."""
        ns = grants_ns(tenant)
        validate_namespace(ns)
        await self._call(ns, "memory", "grant", GrantRequest(ns=ns, to_tenant=to_tenant, revoke=True), Ack)

    # -- paging, for pipelines -----------------------------------------------------

    async def fault(self, ns: str, *, query: str = "", block_ids: Sequence[str] = (), budget: int = DEFAULT_BUDGET,
                    tokenizer: str = "cl100k_base", fault_id: str | None = None) -> FaultReply:
        """Raise a page fault: page in what `query` finds and/or `block_ids`, evicting what no longer fits."""
        if not query.strip() and not block_ids:
            raise UsageError("a fault needs a query or block ids")
        return await self._call(ns, "pager", "fault", FaultRequest(
            ns=ns, fault_id=fault_id or f"c{uuid.uuid4().hex}", budget=budget, query=query, block_ids=tuple(block_ids),
            tokenizer=tokenizer,
        ), FaultReply)

    async def evict(self, ns: str, block_ids: Sequence[str]) -> EvictReply:
        """Evict resident blocks (pinned ones are refused); evicted pages are summarised."""
        return await self._call(ns, "pager", "evict", EvictRequest(ns=ns, block_ids=tuple(block_ids)), EvictReply)

    async def pin(self, ns: str, block_ids: Sequence[str]) -> PinReply:
        """Pin blocks: resident from now on, never evicted."""
        return await self._call(ns, "pager", "pin", PinRequest(ns=ns, block_ids=tuple(block_ids)), PinReply)

    async def unpin(self, ns: str, block_ids: Sequence[str]) -> PinReply:
        """Unpin blocks: they stay resident until evicted."""
        return await self._call(ns, "pager", "pin", PinRequest(ns=ns, block_ids=tuple(block_ids), pin=False), PinReply)

    async def _read(self, ns: str, after: int, kinds: Sequence[str], limit: int = 1000) -> ReadReply:
        return await self._call(ns, "reader", "read", ReadRequest(ns=ns, after=after, limit=limit, kinds=tuple(kinds)),
                                ReadReply)

    async def events(self, ns: str, *, after: int = 0, kinds: Sequence[str] = (), limit: int = 1000) -> AsyncIterator[list[StoredEvent]]:
        """The committed events of `ns` after sequence `after`, in batches, up to the end of the log now.

        Only events of the `kinds` given (event type tags such as
        ``"page_evicted"``), if any.  Folding them from zero rebuilds the
        namespace's state (compare :meth:`state_hash`).
        """
        _check_kinds(kinds)
        while True:
            reply = await self._read(ns, after, kinds, limit)
            if reply.events:
                yield list(reply.events)
            if reply.through <= after:
                return
            after = reply.through

    async def watch(self, ns: str, *, kinds: Sequence[str] = (), after: int | None = None) -> AsyncIterator[StoredEvent]:
        """Committed events of `ns` as they happen (after sequence `after`; default: from now), forever.

        Follows the namespace's event subject (``vmem.<tenant>.<agent>.events``):
        a notification that continues exactly where the watcher is gives its
        events at once; anything else (a gap, a large batch, a lost message,
        or nothing for a second) is read from the reader, so no event is
        missed or repeated.  Close it with ``contextlib.aclosing``.
        """
        _check_kinds(kinds)
        wanted = {EVENT_BY_TAG[k] for k in kinds}
        async with await self.bus.subscribe(self.subjects.events(ns)) as sub:
            if after is None:
                after = (await self.state(ns)).head
            while True:
                reply = await self._read(ns, after, kinds)
                for stored in reply.events:
                    yield stored
                if reply.through > after:
                    after = reply.through
                    continue
                # Caught up: wait for notifications, reading again after a gap or a quiet second.
                while True:
                    note: EventsCommitted | None = None
                    with anyio.move_on_after(WATCH_POLL_S):
                        async for msg in sub:
                            try:
                                candidate = decode(msg.data, EventsCommitted, where="event notification")
                            except SchemaError:
                                continue  # not a notification: the reads are the truth anyway
                            if candidate.last > after:
                                note = candidate
                                break
                    if note is None or note.prev != after or not note.events:
                        break
                    for stored in note.events:
                        if not wanted or type(stored.event) in wanted:
                            yield stored
                    after = note.last

    async def search(self, ns: str, query: str, *, limit: int = 20,
                     kinds: Sequence[str] = ("page", "summary", "message", "fact", "tool_call", "tool_result")) -> SearchReply:
        """Search the namespace's stored blocks (recall and archival storage) as the pager does: fused candidates."""
        return await self._call(ns, "retriever", "search",
                                SearchRequest(ns=ns, query=query, limit=limit, kinds=tuple(kinds)), SearchReply)

    # -- reading -----------------------------------------------------------------

    async def state(self, ns: str) -> StateReply:
        """A summary of the live state of `ns`: its hash, head sequence, turn, resident set, slots."""
        validate_namespace(ns)
        return await self._call(ns, "reader", "state", StateRequest(ns=ns), StateReply)

    async def state_hash(self, ns: str) -> str:
        return (await self.state(ns)).state_hash

    async def block(self, ns: str, block_id: str) -> BlockWritten:
        """A stored block of `ns` by id, or by a unique prefix of it (prompts show 12 hex digits)."""
        if len(block_id) < 8:
            raise UsageError(f"block id {block_id!r} is too short: give at least 8 hex digits")
        reply = await self._call(ns, "reader", "block", BlockRequest(ns=ns, block_id=block_id), BlockReply)
        return reply.block  # type: ignore[return-value]

    async def traces(self, ns: str, turn: int) -> list[tuple[int, PromptPacked]]:
        """Every packed-prompt trace of a turn, with its log sequence."""
        return list((await self._call(ns, "reader", "traces", TracesRequest(ns=ns, turn=turn), TracesReply,
                                      timeout=LONG_TIMEOUT)).traces)

    async def trace_diff(self, ns: str, turn_a: int, turn_b: int) -> TraceDiff:
        """What entered and left the prompt between the last traces of two turns, and why."""
        a = (await self.traces(ns, turn_a))[-1]
        b = (await self.traces(ns, turn_b))[-1]
        return diff_traces(ns, a, b)

    async def tail(self, ns: str, n: int = 20) -> list[StoredEvent]:
        """The last `n` events of `ns`."""
        return list((await self._call(ns, "reader", "tail", TailRequest(ns=ns, n=n), ReadReply)).events)

    async def replay(self, ns: str, *, until: int | None = None, verify: bool = True) -> ReplayReport:
        """Re-fold the log of `ns` (up to `until`) and compare with the live state (done by the service)."""
        validate_namespace(ns)
        return await self._call(ns, "reader", "replay", ReplayRequest(ns=ns, until=until, verify=verify), ReplayReport,
                                timeout=LONG_TIMEOUT)

    async def namespaces(self, tenant: str) -> list[str]:
        """The namespaces of `tenant` that hold events."""
        ns = f"{tenant}/{TENANT_AGENT}"
        validate_namespace(ns)
        return list((await self._call(ns, "reader", "namespaces", NamespacesRequest(ns=ns), NamespacesReply)).namespaces)


def _check_kinds(kinds: Sequence[str]) -> None:
    unknown = sorted(set(kinds) - set(EVENT_BY_TAG))
    if unknown:
        raise UsageError(f"unknown event types {unknown}; known: {', '.join(sorted(EVENT_BY_TAG))}")

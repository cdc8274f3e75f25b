"""The client's read methods: events (batches and a live watch), search, state, blocks, traces, replay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio

from vmem.assembly.trace_diff import TraceDiff, diff_traces
from vmem.client.calls import LONG_TIMEOUT, ActorCalls
from vmem.errors import SchemaError, UsageError
from vmem.schemas.codec import decode
from vmem.schemas.events import EVENT_BY_TAG, BlockWritten, PromptPacked
from vmem.schemas.messages import (
    BlockReply,
    BlockRequest,
    EventsCommitted,
    NamespacesReply,
    NamespacesRequest,
    PromptReply,
    PromptRequest,
    ReadReply,
    ReadRequest,
    ReplayReport,
    ReplayRequest,
    SearchReply,
    SearchRequest,
    StateReply,
    StateRequest,
    StoredEvent,
    TailRequest,
    TracesReply,
    TracesRequest,
)
from vmem.state.namespace import validate_namespace

TENANT_AGENT = "_tenant"
WATCH_POLL_S = 1.0  # watchers read what notifications missed at least this often


class ReadCalls(ActorCalls):
    """Reads: every one is a request to the reader (or retriever) actor; nothing is read from a store here."""

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

    async def prompt(self, ns: str, turn: int, attempt: int = -1) -> PromptReply:
        """The exact prompt of `turn`'s last attempt (or of `attempt`), re-rendered from the log and checked against its trace's SHA-256."""
        return await self._call(ns, "reader", "prompt", PromptRequest(ns=ns, turn=turn, attempt=attempt), PromptReply,
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

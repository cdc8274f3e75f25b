"""Conformance tests every :class:`vmem.storage.log.Log` implementation must pass.

Subclass :class:`LogConformance` in a test module that provides:

``anyio_backend``
    The async backend(s) to run under.
``log``
    An open Log over *empty* storage, closed by the fixture afterwards.  A
    test may close it itself first (the durability test does), so the
    fixture's close must tolerate an already closed log.
``reopen``
    An async callable returning a new Log over the same storage as ``log``;
    the durability test calls it after ``await log.aclose()``.  The fixture
    closes every log it handed out.

The tests use only the public interface.  They never assume particular
sequence numbers (sequences are shared by the namespaces of a home and a
backend may number from anywhere), only their order, and they wait for
followers with a deadline instead of sleeping.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing

import anyio
import msgspec
import pytest
from anyio.abc import TaskStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmem.errors import ConcurrencyConflict, InvalidNamespace, UsageError
from vmem.schemas import events as ev
from vmem.state.blocks import make_block
from vmem.state.fold import State, apply, fold, state_hash
from vmem.storage.log import AppendResult, Log, StoredEvent

# Generous: only a broken log comes near it, and it turns a hang into a failure.
DEADLINE = 10.0

Reopen = Callable[[], Awaitable[Log]]

INVALID_NAMESPACES = [
    "",
    "acme",
    "acme/",
    "/agent",
    "a/b/c",
    "acme.x/agent",
    "acme/*",
    "acme/>",
    "ac me/agent",
    "acme/agent\n",
    "acme/agent\x00",
    "acmé/agent",
    "a" * 65 + "/agent",
]

_fresh = itertools.count()


def fresh_ns(prefix: str = "h") -> str:
    """A namespace no other test or example of this process has used."""
    return f"conf/{prefix}{next(_fresh)}"


def events_for(ns: str, n: int, tag: str = "e") -> list[ev.Event]:
    """`n` distinct, realistic events of `ns`: blocks, edges, loads and errors."""
    out: list[ev.Event] = []
    prev = ""
    for i in range(n):
        kind = i % 4
        if kind == 0:
            block = make_block(ns, "page", "document", f"{tag} page {i}: " + "lorem ipsum " * 8, {"page": str(i)})
            out.append(block)
            prev = block.block_id
        elif kind == 1:
            out.append(ev.EdgeAdded(ns=ns, src=prev or f"{tag}{i}", dst=f"{tag}-dst-{i}", kind="follows"))
        elif kind == 2:
            out.append(ev.PageLoaded(ns=ns, block_id=prev or f"{tag}{i}", turn=i, reason="prefetch"))
        else:
            out.append(ev.ErrorRaised(ns=ns, turn=i, where=tag, code="E", message=f"{tag} event {i}"))
    return out


def only_events(stored: Sequence[StoredEvent]) -> list[ev.Event]:
    return [s.event for s in stored]


async def read_everything(log: Log, ns: str, *, after: int = 0, page: int = 4096) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    while True:
        chunk = await log.read(ns, after=after, limit=page)
        if not chunk:
            return out
        out += chunk
        after = chunk[-1].seq


def assert_batch_at(stored: Sequence[StoredEvent], result: AppendResult, batch: Sequence[ev.Event]) -> None:
    """The events stored in the range a result names are exactly the batch."""
    assert result.first_seq <= result.last_seq
    in_range = [s.event for s in stored if result.first_seq <= s.seq <= result.last_seq]
    assert in_range == list(batch)
    assert stored_seq(stored, result.first_seq) and stored_seq(stored, result.last_seq)


def stored_seq(stored: Sequence[StoredEvent], seq: int) -> bool:
    return any(s.seq == seq for s in stored)


# -- hypothesis strategies ------------------------------------------------------

_NS = "gen/ns"  # replaced by the example's namespace before appending
_ids = st.sampled_from([f"blk{i}" for i in range(6)] + ["~summary"])
_text = st.text(st.characters(codec="utf-8"), max_size=24)
_small = st.integers(min_value=0, max_value=5)


def _block_written() -> st.SearchStrategy[ev.Event]:
    attrs = st.fixed_dictionaries(
        {},
        optional={
            "doc": st.sampled_from(["d1", "d2"]),
            "page": st.integers(1, 9).map(str),
            "heading": _text,
        },
    ).map(lambda d: tuple(sorted(d.items())))
    return st.builds(
        ev.BlockWritten,
        ns=st.just(_NS),
        block_id=_ids,
        kind=st.sampled_from(["page", "message", "summary", "tool_call", "tool_result", "system", "task", "fact"]),
        role=st.sampled_from(["user", "assistant", "document", "system"]),
        text=_text,
        attrs=attrs,
    )


def _prompt_packed() -> st.SearchStrategy[ev.Event]:
    section = st.builds(
        ev.SectionTrace,
        name=st.sampled_from(["system", "pages", "messages"]),
        budget=_small,
        tokens=_small,
        blocks=st.lists(_ids, max_size=3).map(tuple),
    )
    left_out = st.builds(
        ev.LeftOut,
        block_id=_ids,
        section=st.just("pages"),
        reason=st.sampled_from(["budget", "integrity", "pinned", "duplicate", "not_resident"]),
    )
    return st.builds(
        ev.PromptPacked,
        ns=st.just(_NS),
        turn=_small,
        attempt=_small,
        profile=st.just("offline"),
        budget=_small,
        prompt_tokens=_small,
        prompt_sha256=st.just("0" * 64),
        sections=st.lists(section, max_size=3).map(tuple),
        left_out=st.lists(left_out, max_size=2).map(tuple),
    )


ANY_EVENT: st.SearchStrategy[ev.Event] = st.one_of(
    _block_written(),
    st.builds(ev.EdgeAdded, ns=st.just(_NS), src=_ids, dst=_ids, kind=st.sampled_from(["follows", "summarizes", "result_of"])),
    st.builds(
        ev.DocumentIngested, ns=st.just(_NS), doc_id=st.sampled_from(["d1", "d2"]), source=_text,
        pages=_small, first=_ids, last=_ids, bytes=_small,
    ),
    st.builds(ev.TurnStarted, ns=st.just(_NS), turn=_small, question=_text, budget=_small, model=st.just("m")),
    st.builds(ev.PageLoaded, ns=st.just(_NS), block_id=_ids, turn=_small, reason=st.sampled_from(["fault", "prefetch", "pin"])),
    st.builds(ev.PageEvicted, ns=st.just(_NS), block_id=_ids, turn=_small, reason=st.sampled_from(["lru", "budget"])),
    st.builds(
        ev.PageFaultRaised, ns=st.just(_NS), fault_id=st.sampled_from(["f1", "f2"]), turn=_small, query=_text,
        block_ids=st.lists(_ids, max_size=2).map(tuple), source=st.sampled_from(["model", "pager", "agent"]),
    ),
    st.builds(
        ev.PageFaultResolved, ns=st.just(_NS), fault_id=st.sampled_from(["f1", "f2"]), turn=_small,
        loaded=st.lists(_ids, max_size=2).map(tuple), evicted=st.lists(_ids, max_size=2).map(tuple), error=_text,
    ),
    st.builds(
        ev.SummaryCommitted, ns=st.just(_NS), job_id=_text, summary_id=_ids,
        sources=st.lists(_ids, max_size=3).map(tuple), compressor=st.just("c"),
    ),
    _prompt_packed(),
    st.builds(
        ev.ModelResponded, ns=st.just(_NS), turn=_small, attempt=_small, model=st.just("m"), text=_text,
        input_tokens=_small, output_tokens=_small,
    ),
    st.builds(ev.TurnEnded, ns=st.just(_NS), turn=_small, answer=_text, cited=st.lists(_ids, max_size=2).map(tuple)),
    st.builds(ev.ErrorRaised, ns=st.just(_NS), turn=_small, where=_text, code=_text, message=_text),
)

# Each example appends to fresh namespaces of the test's one log, so a
# function-scoped `log` fixture is sound here.
_PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class LogConformance:
    """The behaviour shared by every Log; subclass it with ``log`` and ``reopen`` fixtures."""

    pytestmark = pytest.mark.anyio

    # -- append and read ----------------------------------------------------

    async def test_is_a_log(self, log: Log) -> None:
        assert isinstance(log, Log)

    async def test_empty_namespace(self, log: Log) -> None:
        ns = fresh_ns()
        assert await log.last_seq(ns) == 0
        assert await log.read(ns) == []
        assert await log.namespaces() == []

    async def test_append_returns_increasing_sequences(self, log: Log) -> None:
        ns = fresh_ns()
        results = []
        for size in (1, 3, 2, 5, 1):
            r = await log.append(ns, events_for(ns, size, tag=f"s{len(results)}"))
            assert not r.duplicate
            assert r.last_seq - r.first_seq + 1 == size
            if results:
                assert r.first_seq > results[-1].last_seq
            assert r.first_seq >= 1
            assert await log.last_seq(ns) == r.last_seq
            results.append(r)

    async def test_read_last_walks_back_within_one_namespace(self, log: Log) -> None:
        base = fresh_ns("a")
        for ns in (base, base + "b", base + "_"):  # neighbours on both sides of its keys
            await log.append(ns, [ev.ErrorRaised(ns=ns, turn=i, where="w", code="c", message=ns) for i in range(30)])
        everything = await log.read(base, limit=1000)
        assert await log.read_last(base, 7) == everything[-7:]
        assert await log.read_last(base, 100) == everything
        assert await log.read_last(base, 0) == []
        assert await log.read_last(fresh_ns("none"), 5) == []

    async def test_fold_into_folds_what_read_returns_and_skips_what_fails_its_checks(self, log: Log) -> None:
        from vmem.state.fold import State, fold, state_hash

        ns = fresh_ns()
        good = events_for(ns, 12)
        forged = ev.BlockWritten(ns=ns, block_id="f" * 32, kind="page", role="document", text="not its hash")
        await log.append(ns, good[:6])
        await log.append(ns, [forged])
        await log.append(ns, good[6:])
        rejected: list = []
        state = State(ns=ns)
        n, last = await log.fold_into(ns, state, on_reject=rejected.append)
        assert (n, last) == (12, await log.last_seq(ns))
        assert [r.reason for r in rejected] == ["block id ffffffffffff is not the hash of its content"]
        assert state_hash(state) == state_hash(fold(good, State(ns=ns)))
        part = State(ns=ns)
        first = (await log.read(ns, limit=3))[-1].seq
        n, last = await log.fold_into(ns, part, until=first)
        assert (n, last) == (3, first)

    async def test_read_returns_appended_events_in_order(self, log: Log) -> None:
        ns = fresh_ns()
        batches = [events_for(ns, n, tag=f"b{i}") for i, n in enumerate((4, 1, 3, 2))]
        results = [await log.append(ns, b) for b in batches]
        stored = await log.read(ns)
        assert only_events(stored) == [e for b in batches for e in b]
        seqs = [s.seq for s in stored]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        for r, b in zip(results, batches):
            assert_batch_at(stored, r, b)

    async def test_read_after_and_limit(self, log: Log) -> None:
        ns = fresh_ns()
        other = fresh_ns()
        # Interleave another namespace so this one's sequences have gaps.
        for i in range(5):
            await log.append(ns, events_for(ns, 2, tag=f"mine{i}"))
            await log.append(other, events_for(other, 1, tag=f"theirs{i}"))
        stored = await log.read(ns)
        assert len(stored) == 10
        for i, s in enumerate(stored):
            assert await log.read(ns, after=s.seq) == stored[i + 1 :]
            # `after` need not be a sequence of this namespace.
            assert await log.read(ns, after=s.seq - 1) == stored[i:]
        assert await log.read(ns, after=0) == stored
        assert await log.read(ns, after=stored[-1].seq + 1000) == []
        for limit in (1, 3, 10, 11, 4096):
            assert await log.read(ns, limit=limit) == stored[:limit]
        assert await log.read(ns, after=stored[3].seq, limit=2) == stored[4:6]
        assert await read_everything(log, ns, page=3) == stored

    async def test_namespaces_are_isolated(self, log: Log) -> None:
        # Names that share prefixes catch a backend that scans by prefix carelessly.
        names = ["iso/a", "iso/ab", "iso/a_", "iso-x/a", "isoa/a", "iso/A"]
        appended: dict[str, list[ev.Event]] = {n: [] for n in names}
        for round_ in range(3):
            for n in names:
                batch = events_for(n, 2, tag=f"{n}:{round_}")
                await log.append(n, batch)
                appended[n] += batch
        for n in names:
            got = await log.read(n)
            assert only_events(got) == appended[n]
            assert all(s.event.ns == n for s in got)
            assert await log.last_seq(n) == got[-1].seq
        assert await log.namespaces() == sorted(names)

    async def test_namespaces_lists_only_namespaces_with_events(self, log: Log) -> None:
        a, b = fresh_ns("zz"), fresh_ns("aa")
        assert await log.namespaces() == []
        await log.append(a, events_for(a, 1))
        assert await log.namespaces() == [a]
        with pytest.raises(ConcurrencyConflict):
            await log.append(b, events_for(b, 1), expected_last=7)
        await log.read(b)
        await log.last_seq(b)
        assert await log.namespaces() == [a]
        await log.append(b, events_for(b, 1))
        assert await log.namespaces() == sorted([a, b])

    # -- idempotency ---------------------------------------------------------

    async def test_retry_with_same_key_commits_once(self, log: Log) -> None:
        ns = fresh_ns()
        batch = events_for(ns, 3)
        first = await log.append(ns, batch, key="turn-1")
        assert not first.duplicate
        again = await log.append(ns, batch, key="turn-1")
        assert again == AppendResult(first.first_seq, first.last_seq, duplicate=True)
        assert only_events(await log.read(ns)) == batch
        assert await log.last_seq(ns) == first.last_seq
        # Still a duplicate after other appends, keyed and not.
        second = events_for(ns, 2, tag="second")
        await log.append(ns, second, key="turn-2")
        await log.append(ns, events_for(ns, 1, tag="third"))
        late = await log.append(ns, batch, key="turn-1")
        assert late == AppendResult(first.first_seq, first.last_seq, duplicate=True)
        assert len(await log.read(ns)) == 6

    async def test_key_names_the_batch_not_its_content(self, log: Log) -> None:
        ns = fresh_ns()
        first = await log.append(ns, events_for(ns, 2), key="k")
        other = await log.append(ns, events_for(ns, 4, tag="different"), key="k")
        assert other == AppendResult(first.first_seq, first.last_seq, duplicate=True)
        assert only_events(await log.read(ns)) == events_for(ns, 2)

    async def test_keys_are_scoped_to_a_namespace(self, log: Log) -> None:
        # Ingest derives keys from the document's hash: the same document
        # ingested into two namespaces must commit in both.
        a, b = fresh_ns(), fresh_ns()
        ra = await log.append(a, events_for(a, 2), key="ingest:doc:0")
        rb = await log.append(b, events_for(b, 2), key="ingest:doc:0")
        assert not ra.duplicate and not rb.duplicate
        assert only_events(await log.read(b)) == events_for(b, 2)

    async def test_retry_with_stale_expected_last_is_a_duplicate(self, log: Log) -> None:
        # A writer whose append committed but whose acknowledgement was lost
        # retries with the same arguments: it must learn of its success, not
        # be told of a conflict with itself.
        ns = fresh_ns()
        batch = events_for(ns, 2)
        first = await log.append(ns, batch, key="once", expected_last=0)
        again = await log.append(ns, batch, key="once", expected_last=0)
        assert again == AppendResult(first.first_seq, first.last_seq, duplicate=True)
        assert only_events(await log.read(ns)) == batch

    # -- optimistic concurrency ---------------------------------------------------

    async def test_expected_last(self, log: Log) -> None:
        ns = fresh_ns()
        other = fresh_ns()
        r1 = await log.append(ns, events_for(ns, 2, tag="one"), expected_last=0)
        # Appends to another namespace do not move this namespace's last sequence.
        await log.append(other, events_for(other, 3))
        r2 = await log.append(ns, events_for(ns, 1, tag="two"), expected_last=r1.last_seq)
        assert r2.first_seq > r1.last_seq
        for wrong in (0, r1.last_seq, r2.last_seq + 1, r2.last_seq - 1):
            with pytest.raises(ConcurrencyConflict) as info:
                await log.append(ns, events_for(ns, 1, tag="lost"), expected_last=wrong)
            assert info.value.expected == wrong
            assert info.value.actual == r2.last_seq
            assert info.value.namespace == ns
        assert only_events(await log.read(ns)) == events_for(ns, 2, tag="one") + events_for(ns, 1, tag="two")
        assert await log.last_seq(ns) == r2.last_seq

    async def test_expected_last_on_empty_namespace(self, log: Log) -> None:
        ns = fresh_ns()
        with pytest.raises(ConcurrencyConflict) as info:
            await log.append(ns, events_for(ns, 1), expected_last=1)
        assert info.value.actual == 0
        assert await log.read(ns) == []
        r = await log.append(ns, events_for(ns, 1), expected_last=0)
        assert not r.duplicate
        with pytest.raises(ConcurrencyConflict):
            await log.append(ns, events_for(ns, 1), expected_last=0)

    async def test_conflict_commits_no_part_of_a_batch_nor_its_key(self, log: Log) -> None:
        ns = fresh_ns()
        await log.append(ns, events_for(ns, 1))
        big = events_for(ns, 50, tag="big")
        with pytest.raises(ConcurrencyConflict):
            await log.append(ns, big, key="k", expected_last=0)
        assert only_events(await log.read(ns)) == events_for(ns, 1)
        # The key was not consumed by the failed append.
        r = await log.append(ns, big, key="k")
        assert not r.duplicate
        assert only_events(await log.read(ns)) == events_for(ns, 1) + big

    # -- refused appends ------------------------------------------------------------

    async def test_event_of_another_namespace_is_refused(self, log: Log) -> None:
        ns, other = fresh_ns(), fresh_ns()
        batch = events_for(ns, 3) + events_for(other, 1)
        with pytest.raises(UsageError):
            await log.append(ns, batch)
        with pytest.raises(UsageError):
            await log.append(other, batch)
        assert await log.read(ns) == [] and await log.read(other) == []
        assert await log.namespaces() == []

    async def test_empty_batch_is_refused(self, log: Log) -> None:
        ns = fresh_ns()
        with pytest.raises(UsageError):
            await log.append(ns, [])
        with pytest.raises(UsageError):
            await log.append(ns, [], key="k", expected_last=0)
        assert await log.namespaces() == []

    @pytest.mark.parametrize("bad", INVALID_NAMESPACES)
    async def test_invalid_namespace_is_refused(self, log: Log, bad: str) -> None:
        with pytest.raises(InvalidNamespace):
            await log.append(bad, [ev.ErrorRaised(ns=bad, turn=0, where="w", code="c", message="m")])
        with pytest.raises(InvalidNamespace):
            await log.read(bad)
        with pytest.raises(InvalidNamespace):
            await log.last_seq(bad)
        assert await log.namespaces() == []

    # -- follow ---------------------------------------------------------------------

    async def test_follow_yields_existing_then_new_events(self, log: Log) -> None:
        ns, other = fresh_ns(), fresh_ns()
        before = events_for(ns, 3, tag="before")
        after = events_for(ns, 4, tag="after")
        await log.append(ns, before)
        send, receive = anyio.create_memory_object_stream[StoredEvent](100)

        async def follower() -> None:
            async with send, aclosing(log.follow(ns)) as stream:
                async for stored in stream:
                    await send.send(stored)

        got: list[StoredEvent] = []
        with anyio.fail_after(DEADLINE):
            async with receive, anyio.create_task_group() as tg:
                tg.start_soon(follower)
                for _ in before:
                    got.append(await receive.receive())
                assert only_events(got) == before
                # Appended only once the follower has caught up and waits.
                await log.append(other, events_for(other, 2))
                await log.append(ns, after[:1])
                await log.append(ns, after[1:])
                for _ in after:
                    got.append(await receive.receive())
                tg.cancel_scope.cancel()
        assert only_events(got) == before + after
        assert got == await log.read(ns)

    async def test_follow_starts_after_the_given_sequence(self, log: Log) -> None:
        ns = fresh_ns()
        first = await log.append(ns, events_for(ns, 3, tag="old"))
        await log.append(ns, events_for(ns, 2, tag="new"))
        expected = await log.read(ns, after=first.last_seq)
        got: list[StoredEvent] = []
        with anyio.fail_after(DEADLINE):
            async with aclosing(log.follow(ns, after=first.last_seq)) as stream:
                async for stored in stream:
                    got.append(stored)
                    if len(got) == len(expected):
                        break
        assert got == expected

    async def test_followers_of_one_namespace_each_get_every_event(self, log: Log) -> None:
        ns = fresh_ns()
        batch = events_for(ns, 6)
        results: dict[int, list[ev.Event]] = {0: [], 1: []}

        async def follower(i: int, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            async with aclosing(log.follow(ns)) as stream:
                async for stored in stream:
                    results[i].append(stored.event)
                    if len(results[i]) == len(batch):
                        return

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                await tg.start(follower, 0)
                await tg.start(follower, 1)
                for e in batch:
                    await log.append(ns, [e])
        assert results == {0: batch, 1: batch}

    # -- durability -------------------------------------------------------------------

    async def test_durable_across_reopen(self, log: Log, reopen: Reopen) -> None:
        a, b = fresh_ns(), fresh_ns()
        ra = await log.append(a, events_for(a, 3), key="a-1")
        rb = await log.append(b, events_for(b, 2), key="b-1")
        ra2 = await log.append(a, events_for(a, 1, tag="more"), expected_last=ra.last_seq)
        before = {n: await log.read(n) for n in (a, b)}
        await log.aclose()

        log2 = await reopen()
        assert {n: await log2.read(n) for n in (a, b)} == before
        assert await log2.namespaces() == sorted([a, b])
        assert await log2.last_seq(a) == ra2.last_seq
        assert await log2.last_seq(b) == rb.last_seq
        # Idempotency keys survive: an interrupted writer resumes safely.
        assert await log2.append(a, events_for(a, 3), key="a-1") == AppendResult(ra.first_seq, ra.last_seq, True)
        # Sequences keep growing and expected_last keeps working.
        with pytest.raises(ConcurrencyConflict):
            await log2.append(b, events_for(b, 1), expected_last=0)
        r = await log2.append(b, events_for(b, 1, tag="later"), expected_last=rb.last_seq)
        assert r.first_seq > max(ra2.last_seq, rb.last_seq)

    # -- concurrency ----------------------------------------------------------------------

    async def test_concurrent_appends_all_commit(self, log: Log) -> None:
        names = [fresh_ns(), fresh_ns()]
        results: list[tuple[str, AppendResult, list[ev.Event]]] = []

        async def writer(w: int) -> None:
            ns = names[w % 2]
            for i in range(5):
                batch = events_for(ns, 1 + (w + i) % 3, tag=f"w{w}.{i}")
                key = f"w{w}.{i}" if i % 2 else None
                results.append((ns, await log.append(ns, batch, key=key), batch))

        with anyio.fail_after(DEADLINE * 3):
            async with anyio.create_task_group() as tg:
                for w in range(16):
                    tg.start_soon(writer, w)
        assert len(results) == 80
        ranges = sorted((r.first_seq, r.last_seq) for _, r, _ in results)
        for (_, last), (first, _) in itertools.pairwise(ranges):
            assert last < first, "two appends were given overlapping sequences"
        stored = {n: await log.read(n, limit=10_000) for n in names}
        for ns, r, batch in results:
            assert not r.duplicate
            assert_batch_at(stored[ns], r, batch)
        assert sum(map(len, stored.values())) == sum(len(b) for _, _, b in results)

    async def test_concurrent_expected_last_admits_one_writer(self, log: Log) -> None:
        ns = fresh_ns()
        head = (await log.append(ns, events_for(ns, 1))).last_seq
        won: list[int] = []
        lost: list[int] = []

        async def writer(w: int) -> None:
            try:
                await log.append(ns, events_for(ns, 2, tag=f"w{w}"), expected_last=head)
            except ConcurrencyConflict:
                lost.append(w)
            else:
                won.append(w)

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                for w in range(8):
                    tg.start_soon(writer, w)
        assert len(won) == 1 and len(lost) == 7
        assert only_events(await log.read(ns)) == events_for(ns, 1) + events_for(ns, 2, tag=f"w{won[0]}")

    async def test_concurrent_retries_of_one_key_commit_once(self, log: Log) -> None:
        ns = fresh_ns()
        batch = events_for(ns, 3)
        results: list[AppendResult] = []

        async def writer() -> None:
            results.append(await log.append(ns, batch, key="same"))

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(writer)
        assert sum(not r.duplicate for r in results) == 1
        assert len({(r.first_seq, r.last_seq) for r in results}) == 1
        assert only_events(await log.read(ns)) == batch

    # -- properties ----------------------------------------------------------------------------

    @_PROPERTY
    @given(
        ops=st.lists(
            st.tuples(
                st.integers(0, 1),  # which namespace
                st.one_of(st.none(), st.sampled_from(["k0", "k1", "k2", "k3"])),  # key
                st.integers(1, 4),  # batch size
            ),
            max_size=12,
        )
    )
    async def test_log_matches_a_model_of_keyed_batches(self, log: Log, ops: list[tuple[int, str | None, int]]) -> None:
        names = [fresh_ns("m"), fresh_ns("m")]
        model: dict[str, list[ev.Event]] = {n: [] for n in names}
        committed: dict[tuple[str, str], AppendResult] = {}
        last = 0
        for step, (which, key, size) in enumerate(ops):
            ns = names[which]
            batch = events_for(ns, size, tag=f"op{step}")
            r = await log.append(ns, batch, key=key)
            if key is not None and (ns, key) in committed:
                first = committed[(ns, key)]
                assert r == AppendResult(first.first_seq, first.last_seq, duplicate=True)
                continue
            assert not r.duplicate and r.first_seq > last
            last = r.last_seq
            model[ns] += batch
            if key is not None:
                committed[(ns, key)] = r
        for ns in names:
            stored = await log.read(ns, limit=10_000)
            assert only_events(stored) == model[ns]
            assert await log.last_seq(ns) == (stored[-1].seq if stored else 0)

    @_PROPERTY
    @given(batches=st.lists(st.lists(ANY_EVENT, min_size=1, max_size=5), max_size=8))
    async def test_replay_equals_live_at_every_prefix(self, log: Log, batches: list[list[ev.Event]]) -> None:
        ns = fresh_ns("r")
        batches = [[msgspec.structs.replace(e, ns=ns) for e in b] for b in batches]
        for b in batches:
            await log.append(ns, b)
        appended = [e for b in batches for e in b]
        stored = await read_everything(log, ns, page=3)
        read_back = only_events(stored)
        assert read_back == appended

        live, replayed = State(ns=ns), State(ns=ns)
        for i, (a, r) in enumerate(zip(appended, read_back)):
            apply(live, a)
            apply(replayed, r)
            assert state_hash(replayed) == state_hash(live), f"diverged after event {i}: {type(a).__name__}"
        # The fold is deterministic: folding in one go, or by log pages, gives the same state.
        whole = fold(appended, State(ns=ns))
        paged = State(ns=ns)
        for chunk in [stored[i : i + 2] for i in range(0, len(stored), 2)]:
            fold((s.event for s in chunk), paged)
        assert state_hash(whole) == state_hash(paged) == state_hash(live)


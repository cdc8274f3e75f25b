"""LocalBus: the shared Bus conformance suite, its own guarantees, and subject matching."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import anyio
import pytest
from conformance.bus_suite import BusConformance, bounded_task_group, serve, take
from hypothesis import given
from hypothesis import strategies as st

from vmem.bus.bus import Bus, subject_matches, validate_pattern, validate_subject
from vmem.bus.local import LocalBus
from vmem.errors import UsageError


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def bus(anyio_backend: str) -> AsyncIterator[LocalBus]:
    async with LocalBus() as local_bus:
        yield local_bus


class TestLocalBusConformance(BusConformance):
    """Run the shared suite against LocalBus under asyncio and trio."""


@pytest.mark.anyio
class TestLocalBusGuarantees:
    """What LocalBus promises beyond the interface: determinism and slow-consumer drops."""

    async def test_queue_group_round_robin_in_subscription_order(self, bus: LocalBus) -> None:
        # Mixed patterns, so the order cannot come from the index's layout.
        members = [await bus.subscribe(p, queue="q") for p in ("rr.*", "rr.x", "rr.>")]
        for k in range(9):
            await bus.publish("rr.x", str(k).encode())
        for i, sub in enumerate(members):
            assert [int(m.data) for m in await take(sub, 3)] == [i, i + 3, i + 6]
            assert sub.pending == 0

    async def test_a_slow_consumer_is_bounded_in_bytes_too(self, bus: LocalBus) -> None:
        slow = await bus.subscribe("big.x", pending_bytes=2500)
        for k in range(5):
            await bus.publish("big.x", bytes([k]) * 1000)
        assert (slow.pending, slow.pending_bytes, slow.dropped) == (2, 2000, 3)
        assert [m.data[0] for m in await take(slow, 2)] == [0, 1]
        assert slow.pending_bytes == 0

    async def test_slow_consumer_drops_and_counts(self, bus: LocalBus) -> None:
        slow = await bus.subscribe("fast.x", pending_limit=3)
        roomy = await bus.subscribe("fast.x")
        for k in range(10):
            await bus.publish("fast.x", str(k).encode())  # never waits for readers
        assert (slow.pending, slow.dropped) == (3, 7)
        assert [m.data for m in await take(slow, 3)] == [b"0", b"1", b"2"]
        assert (roomy.pending, roomy.dropped) == (10, 0)

    async def test_queue_group_skips_full_member(self, bus: LocalBus) -> None:
        full = await bus.subscribe("qf.x", queue="q", pending_limit=1)
        free = await bus.subscribe("qf.x", queue="q")
        for k in range(4):
            await bus.publish("qf.x", str(k).encode())
        assert [m.data for m in await take(full, 1)] == [b"0"]
        assert [m.data for m in await take(free, 3)] == [b"1", b"2", b"3"]
        assert full.dropped == free.dropped == 0

    async def test_inbox_subjects_and_cleanup(self, bus: LocalBus) -> None:
        watcher = await bus.subscribe("_INBOX.>")
        async with bounded_task_group() as tg:
            tg.start_soon(serve, bus, await bus.subscribe("svc.one"))
            for _ in range(3):
                assert (await bus.request("svc.one", b"?", timeout=1)).data == b"re:?"
            tg.cancel_scope.cancel()
        assert [m.subject for m in await take(watcher, 3)] == [
            "_INBOX.0",
            "_INBOX.1",
            "_INBOX.2",
        ]
        # Inboxes are removed once their request is answered.
        assert sorted(s.pattern for s in bus._index.all()) == ["_INBOX.>", "svc.one"]

    async def test_many_subscriptions_route_to_exactly_the_matching_ones(self, bus: LocalBus) -> None:
        exact = [await bus.subscribe(f"vmem.t{i}.a.pager.get") for i in range(5000)]
        wild = [await bus.subscribe(f"vmem.t{i}.*.pager.>") for i in range(500)]
        for i in range(5000):
            await bus.publish(f"vmem.t{i % 500}.a.pager.get", b"")
        assert sum(s.pending for s in exact) == sum(s.pending for s in wild) == 5000
        for sub in exact + wild:
            await sub.unsubscribe()
        # Unsubscribing prunes the index back to nothing.
        assert bus._index.all() == []
        assert not bus._index._root.children and not bus._index._exact

    async def test_cancelled_receive_loses_nothing(self, bus: LocalBus) -> None:
        sub = await bus.subscribe("c.x")
        with anyio.move_on_after(0.01):
            await sub.__anext__()
        await bus.publish("c.x", b"kept")
        assert [m.data for m in await take(sub, 1)] == [b"kept"]

    async def test_bad_pending_limit(self, bus: LocalBus) -> None:
        with pytest.raises(UsageError):
            await bus.subscribe("a.b", pending_limit=0)
        with pytest.raises(UsageError):
            LocalBus(pending_limit=-1)


def test_construction_needs_no_event_loop() -> None:
    bus: Bus = LocalBus()  # also checks, statically, that LocalBus is a Bus
    assert isinstance(bus, LocalBus) and not bus.closed


# -- subject_matches against a reference built on regular expressions -------

_TOKEN = st.sampled_from(["a", "b", "c", "vmem", "_INBOX", "x-1"])
_SUBJECT = st.lists(_TOKEN, min_size=1, max_size=5).map(".".join)


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(st.one_of(_TOKEN, st.just("*")), max_size=4))
    if not tokens or draw(st.booleans()):
        tokens.append(">")
    return ".".join(tokens)


@st.composite
def _pattern_from_subject(draw: st.DrawFn) -> tuple[str, str]:
    """A subject and a pattern derived from it, which must therefore match it."""
    tokens = draw(_SUBJECT).split(".")
    pattern = [draw(st.sampled_from([t, "*"])) for t in tokens]
    cut = draw(st.integers(0, len(pattern)))
    if cut < len(pattern) and draw(st.booleans()):
        pattern = pattern[:cut] + [">"]
    return ".".join(pattern), ".".join(tokens)


def _reference(pattern: str, subject: str) -> bool:
    parts = [
        r"[^.]+" if t == "*" else r".+" if t == ">" else re.escape(t) for t in pattern.split(".")
    ]
    return re.fullmatch(r"\.".join(parts), subject) is not None


@given(_patterns(), _SUBJECT)
def test_subject_matches_reference(pattern: str, subject: str) -> None:
    assert subject_matches(pattern, subject) == _reference(pattern, subject)


@given(_pattern_from_subject())
def test_subject_matches_derived(case: tuple[str, str]) -> None:
    pattern, subject = case
    assert subject_matches(pattern, subject) and _reference(pattern, subject)


@given(st.text(alphabet="ab.*> \t", max_size=8))
def test_validation_agrees_with_grammar(text: str) -> None:
    token = r"[^.\s*>]+"
    subject_ok = re.fullmatch(rf"{token}(\.{token})*", text) is not None
    pattern_ok = re.fullmatch(rf"({token}|\*)(\.({token}|\*))*(\.>)?|>", text) is not None
    for validate, ok in ((validate_subject, subject_ok), (validate_pattern, pattern_ok)):
        if ok:
            assert validate(text) == text
        else:
            with pytest.raises(UsageError):
                validate(text)

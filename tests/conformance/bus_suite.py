"""Conformance tests every :class:`vmem.bus.bus.Bus` implementation must pass.

Subclass :class:`BusConformance` in a test module that provides a ``bus``
fixture (an open bus, closed by the fixture afterwards) and an
``anyio_backend`` fixture.  The tests only use the public Bus interface and
never assume delivery happens synchronously: they wait for messages with a
deadline and use a same-connection barrier message to prove that nothing
else was delivered, so a networked bus (NATS) passes them too.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from vmem.bus.bus import Bus, Msg, Subscription
from vmem.errors import BusError, NoResponders, RequestTimeout, UsageError

# Generous: only a broken bus comes near it, and it turns a hang into a failure.
DEADLINE = 5.0
_BARRIER = b"\x00barrier:"
_barrier_ids = itertools.count()


async def take(sub: Subscription, n: int) -> list[Msg]:
    """The next `n` messages of `sub`, failing if they do not arrive in time."""
    out: list[Msg] = []
    with anyio.fail_after(DEADLINE):
        async for msg in sub:
            out.append(msg)
            if len(out) == n:
                break
    assert len(out) == n, f"subscription ended after {len(out)} of {n} messages"
    return out


async def rest(bus: Bus, sub: Subscription, subject: str) -> list[Msg]:
    """Everything `sub` got before a barrier published now to `subject` (which it must match).

    A bus preserves order per publisher, so once the barrier arrives every
    earlier message has too; other tests' barriers are filtered out.
    """
    marker = _BARRIER + str(next(_barrier_ids)).encode()
    await bus.publish(subject, marker)
    out: list[Msg] = []
    with anyio.fail_after(DEADLINE):
        async for msg in sub:
            if msg.data == marker:
                return out
            if not msg.data.startswith(_BARRIER):
                out.append(msg)
    raise AssertionError("subscription ended before the barrier arrived")


async def take_group(members: list[Subscription], n: int) -> list[list[Msg]]:
    """What each member of a queue group gets until `n` messages arrived in total.

    Which member gets a message is up to the bus, so all are read at once; a
    short grace period afterwards lets any duplicate delivery show up.
    """
    got: list[list[Msg]] = [[] for _ in members]
    enough = anyio.Event()

    async def collect(i: int) -> None:
        async for msg in members[i]:
            got[i].append(msg)
            if sum(map(len, got)) >= n:
                enough.set()

    async with anyio.create_task_group() as tg:
        for i in range(len(members)):
            tg.start_soon(collect, i)
        with anyio.fail_after(DEADLINE):
            await enough.wait()
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    return got


@asynccontextmanager
async def bounded_task_group() -> AsyncIterator[TaskGroup]:
    """A task group that fails the test instead of hanging when a task never ends."""
    with anyio.fail_after(DEADLINE * 2):
        async with anyio.create_task_group() as tg:
            yield tg


async def serve(bus: Bus, sub: Subscription, prefix: bytes = b"re:") -> None:
    """Answer every request on `sub` with `prefix + data`, echoing its headers."""
    async for msg in sub:
        await bus.respond(msg, prefix + msg.data, headers=msg.headers)


class BusConformance:
    """The behaviour shared by every Bus; subclass it with a ``bus`` fixture."""

    pytestmark = pytest.mark.anyio

    # -- publish / subscribe ------------------------------------------------

    async def test_exact_delivery(self, bus: Bus) -> None:
        sub = await bus.subscribe("vmem.t.a.pager.get")
        await bus.publish("vmem.t.a.pager.get", b"hello")
        [msg] = await take(sub, 1)
        assert msg == Msg("vmem.t.a.pager.get", b"hello")
        assert msg.reply is None and msg.headers is None
        await bus.publish("vmem.t.a.pager.gets", b"no")
        await bus.publish("vmem.t.a.pager", b"no")
        await bus.publish("vmem.t.a.pager.get.x", b"no")
        assert await rest(bus, sub, "vmem.t.a.pager.get") == []

    async def test_publish_with_reply_subject(self, bus: Bus) -> None:
        sub = await bus.subscribe("svc.x")
        inbox = await bus.subscribe("my.inbox")
        await bus.publish("svc.x", b"ping", reply="my.inbox")
        [msg] = await take(sub, 1)
        assert msg.reply == "my.inbox"
        await bus.respond(msg, b"pong")
        [answer] = await take(inbox, 1)
        assert (answer.subject, answer.data, answer.reply) == ("my.inbox", b"pong", None)

    async def test_wildcards(self, bus: Bus) -> None:
        patterns = ["a.*", "a.>", "*.b", ">", "a.b.*", "*.*.*", "a.*.c"]
        subs = {p: await bus.subscribe(p) for p in patterns}
        published = ["a", "a.b", "a.c", "x.b", "a.b.c", "a.x.c", "a.b.c.d", "b.a"]
        for subject in published:
            await bus.publish(subject, subject.encode())
        expected = {
            "a.*": ["a.b", "a.c"],
            "a.>": ["a.b", "a.c", "a.b.c", "a.x.c", "a.b.c.d"],
            "*.b": ["a.b", "x.b"],
            ">": published,
            "a.b.*": ["a.b.c"],
            "*.*.*": ["a.b.c", "a.x.c"],
            "a.*.c": ["a.b.c", "a.x.c"],
        }
        barrier = {p: p.replace("*", "z").replace(">", "z") for p in patterns}
        for pattern, sub in subs.items():
            got = await rest(bus, sub, barrier[pattern])
            # The subject is the literal one published to, never the pattern.
            assert [m.subject for m in got] == expected[pattern], pattern
            assert all(m.data == m.subject.encode() for m in got)

    async def test_every_subscriber_gets_a_copy(self, bus: Bus) -> None:
        subs = [await bus.subscribe("fan.out") for _ in range(3)]
        subs.append(await bus.subscribe("fan.*"))
        await bus.publish("fan.out", b"1")
        await bus.publish("fan.out", b"2")
        for sub in subs:
            assert [m.data for m in await take(sub, 2)] == [b"1", b"2"]

    async def test_queue_group_delivers_each_message_once(self, bus: Bus) -> None:
        n = 90
        members = [await bus.subscribe("work.items", queue="workers") for _ in range(3)]
        for k in range(n):
            await bus.publish("work.items", str(k).encode())
        got = await take_group(members, n)
        delivered = sorted(int(m.data) for per_member in got for m in per_member)
        assert delivered == list(range(n))
        # Spread across members: with three members, one left idle means no balancing.
        assert all(got), [len(g) for g in got]

    async def test_queue_group_and_plain_subscriber(self, bus: Bus) -> None:
        n = 20
        group = [await bus.subscribe("jobs.>", queue="g") for _ in range(2)]
        plain = await bus.subscribe("jobs.run")
        other = await bus.subscribe("jobs.run", queue="h")
        for k in range(n):
            await bus.publish("jobs.run", str(k).encode())
        expected = [str(k).encode() for k in range(n)]
        assert [m.data for m in await take(plain, n)] == expected
        assert [m.data for m in await take(other, n)] == expected
        got = await take_group(group, n)
        assert sorted((m.data for g in got for m in g), key=int) == expected

    async def test_order_per_publisher(self, bus: Bus) -> None:
        sub = await bus.subscribe("seq.*")

        async def publisher(name: str) -> None:
            for k in range(300):
                await bus.publish(f"seq.{name}", str(k).encode())

        async with bounded_task_group() as tg:
            tg.start_soon(publisher, "p")
            tg.start_soon(publisher, "q")
        got = await take(sub, 600)
        for name in ("p", "q"):
            mine = [int(m.data) for m in got if m.subject == f"seq.{name}"]
            assert mine == list(range(300))

    async def test_unsubscribe_stops_delivery(self, bus: Bus) -> None:
        gone = await bus.subscribe("u.x")
        stays = await bus.subscribe("u.x")
        await bus.publish("u.x", b"1")
        assert [m.data for m in await take(gone, 1)] == [b"1"]
        await gone.unsubscribe()
        await gone.unsubscribe()  # idempotent
        await bus.publish("u.x", b"2")
        assert [m.data for m in await take(stays, 2)] == [b"1", b"2"]
        with anyio.fail_after(DEADLINE):
            assert [m async for m in gone] == []
        async with stays:
            pass
        with pytest.raises(NoResponders):
            await bus.request("u.x", b"anyone?", timeout=1.0)

    async def test_headers_round_trip(self, bus: Bus) -> None:
        headers = {"Content-Type": "application/msgpack", "X-Trace-Id": "t-1 2/3", "Empty": ""}
        sub = await bus.subscribe("h.x")
        await bus.publish("h.x", b"", headers=headers)
        await bus.publish("h.x", b"plain")
        first, second = await take(sub, 2)
        assert first.headers == headers and first.data == b""
        assert second.headers is None

        async with bounded_task_group() as tg:
            svc = await bus.subscribe("h.svc")
            tg.start_soon(serve, bus, svc)
            reply = await bus.request("h.svc", b"q", headers=headers, timeout=DEADLINE)
            assert (reply.data, reply.headers) == (b"re:q", headers)
            reply = await bus.request("h.svc", b"q", timeout=DEADLINE)
            assert reply.headers is None
            await svc.unsubscribe()

    # -- request / reply ----------------------------------------------------

    async def test_request_reply(self, bus: Bus) -> None:
        async with bounded_task_group() as tg:
            svc = await bus.subscribe("vmem.t.a.echo.call")
            tg.start_soon(serve, bus, svc)
            reply = await bus.request("vmem.t.a.echo.call", b"hi", timeout=DEADLINE)
            assert reply.data == b"re:hi"
            assert reply.reply is None
            await svc.unsubscribe()

    async def test_request_without_responders(self, bus: Bus) -> None:
        with anyio.fail_after(DEADLINE), pytest.raises(NoResponders):
            await bus.request("nobody.home", b"?", timeout=DEADLINE)
        assert issubclass(NoResponders, BusError)

    async def test_request_timeout(self, bus: Bus) -> None:
        silent = await bus.subscribe("slow.svc")
        start = anyio.current_time()
        with anyio.fail_after(DEADLINE), pytest.raises(RequestTimeout):
            await bus.request("slow.svc", b"?", timeout=0.2)
        assert anyio.current_time() - start >= 0.15
        assert [m.data for m in await take(silent, 1)] == [b"?"]
        assert issubclass(RequestTimeout, BusError)

    async def test_first_answer_wins(self, bus: Bus) -> None:
        async with bounded_task_group() as tg:
            for prefix in (b"a:", b"b:"):
                tg.start_soon(serve, bus, await bus.subscribe("two.svc"), prefix)
            for _ in range(5):
                reply = await bus.request("two.svc", b"x", timeout=DEADLINE)
                assert reply.data in (b"a:x", b"b:x")
            tg.cancel_scope.cancel()

    async def test_concurrent_requests(self, bus: Bus) -> None:
        n = 200
        answers: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            reply = await bus.request("calc.svc", str(i).encode(), timeout=DEADLINE)
            answers[i] = reply.data

        async with bounded_task_group() as servers:
            for _ in range(3):
                servers.start_soon(serve, bus, await bus.subscribe("calc.svc", queue="calc"))
            async with bounded_task_group() as clients:
                for i in range(n):
                    clients.start_soon(ask, i)
            servers.cancel_scope.cancel()
        assert answers == {i: b"re:" + str(i).encode() for i in range(n)}

    async def test_respond_needs_reply_subject(self, bus: Bus) -> None:
        with pytest.raises(UsageError):
            await bus.respond(Msg("a.b", b"x"), b"y")

    # -- validation -----------------------------------------------------------

    @pytest.mark.parametrize(
        "subject",
        ["", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\r\nb", " a", "a.*", "a.>", "*", ">",
         "a.b*", "a>"],
    )
    async def test_invalid_subjects(self, bus: Bus, subject: str) -> None:
        with pytest.raises(UsageError):
            await bus.publish(subject, b"x")
        with pytest.raises(UsageError):
            await bus.request(subject, b"x", timeout=0.2)
        with pytest.raises(UsageError):
            await bus.publish("ok.subject", b"x", reply=subject)

    @pytest.mark.parametrize(
        "pattern", ["", ".", "a.", ".a", "a..b", "a b", "a\nb", "a.>.b", ">.a", "a.b*", "a*.b",
                    "a.>x", "a.*x"]
    )
    async def test_invalid_patterns(self, bus: Bus, pattern: str) -> None:
        with pytest.raises(UsageError):
            await bus.subscribe(pattern)

    async def test_invalid_arguments(self, bus: Bus) -> None:
        bad: list[Any] = ["text", 42, None]
        for data in bad:
            with pytest.raises(UsageError):
                await bus.publish("a.b", data)
        for queue in ["", "a b", "q\n"]:
            with pytest.raises(UsageError):
                await bus.subscribe("a.b", queue=queue)
        for headers in [{"bad key": "v"}, {"k:": "v"}, {"k": "a\r\nb"}, {"k": " padded "}]:
            with pytest.raises(UsageError):
                await bus.publish("a.b", b"", headers=headers)
        # Bytes-like payloads are accepted too (typed as bytes only) and arrive as bytes.
        sub = await bus.subscribe("a.b")
        bytes_like: list[Any] = [bytearray(b"ba"), memoryview(b"mv")]
        for data in bytes_like:
            await bus.publish("a.b", data)
        assert [m.data for m in await take(sub, 2)] == [b"ba", b"mv"]
        assert all(type(m.data) is bytes for m in await rest(bus, sub, "a.b"))

    # -- closing ------------------------------------------------------------

    async def test_close_ends_iteration_and_requests(self, bus: Bus) -> None:
        subs = [
            await bus.subscribe("c.one"),
            await bus.subscribe("c.*"),
            await bus.subscribe("c.>", queue="q"),
        ]
        silent = await bus.subscribe("c.silent")  # never answers the pending request
        ready = [anyio.Event() for _ in subs]
        ended: list[int] = []
        failures: list[BaseException] = []

        async def consume(i: int) -> None:
            async for _ in subs[i]:
                ready[i].set()
            ended.append(i)

        async def pending_request() -> None:
            try:
                await bus.request("c.silent", b"?", timeout=DEADLINE * 4)
            except BusError as exc:
                failures.append(exc)

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                for i in range(len(subs)):
                    tg.start_soon(consume, i)
                tg.start_soon(pending_request)
                await bus.publish("c.one", b"wake")
                for event in ready:
                    await event.wait()
                await take(silent, 1)  # the request is out and waiting
                await bus.aclose()
                await bus.aclose()  # idempotent
            # Leaving the task group proves every task finished on its own.
        assert sorted(ended) == [0, 1, 2]
        assert len(failures) == 1 and not isinstance(failures[0], RequestTimeout)

        with pytest.raises(BusError):
            await bus.publish("c.one", b"late")
        with pytest.raises(BusError):
            await bus.subscribe("c.one")
        with pytest.raises(BusError):
            await bus.request("c.one", b"late", timeout=0.2)
        for sub in subs:
            await sub.unsubscribe()  # harmless after close
            assert [m async for m in sub] == []

"""The delivery engine on a real SQLite store with a scripted user agent:
permanent rejections do not block the mailbox, leases are renewed during a
slow dump, shutdown starts no new dump. Time is the engine's injected clock:
a "slow" user agent moves it on instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sipsilo.flow import Target
from sipsilo.metrics import Counters
from sipsilo.silo.delivery import DeliveryEngine, DeliveryTarget, is_temporary
from sipsilo.silo.sqlite import SqliteSiloStore
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri
from tests.clock import Clock

from .helpers import msg

TARGET = DeliveryTarget(SipUri.parse("sip:bob@127.0.0.1:5099"), Target("udp", "127.0.0.1", 5099))


class UA:
    """Answers each delivered MESSAGE with answer(n) (n counts from 0), after
    running ``during(n)``: what happens while that MESSAGE is in flight."""

    def __init__(
        self, answer: Callable[[int], int],
        during: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.answer = answer
        self.during = during
        self.bodies: list[bytes] = []
        self.sent = asyncio.Event()  # set once the first MESSAGE is out

    async def send(self, request: Request, target: Target) -> Response:
        n = len(self.bodies)
        self.bodies.append(bytes(request.body))
        self.sent.set()
        if self.during is not None:
            await self.during(n)
        return Response(self.answer(n))


async def _setup(tmp_path: Path, count: int) -> tuple[SqliteSiloStore, list[int]]:
    store = SqliteSiloStore(tmp_path / "m.db")
    await store.open()
    exp = int(time.time()) + 3600
    ids = [await store.store(msg(i, exp=exp, body=f"m{i}".encode())) for i in range(count)]
    return store, ids


async def _wait_idle(engine: DeliveryEngine, timeout: float = 10.0) -> None:
    """Until every dump has ended (one kicked meanwhile too); the timeout only
    turns a hang into a failure."""
    async with asyncio.timeout(timeout):
        while engine.active:
            await asyncio.wait([w.task for w in engine._workers.values() if w.task])


def test_temporary_and_permanent_answers() -> None:
    for status in (408, 430, 480, 486, 491, 500, 503, 302):
        assert is_temporary(status), status
    for status in (400, 403, 404, 405, 413, 415, 488, 501, 603, 606):
        assert not is_temporary(status), status


def test_permanent_rejection_skips_the_message_and_keeps_it(tmp_path: Path) -> None:
    async def main() -> None:
        store, ids = await _setup(tmp_path, 4)
        counters = Counters()
        ua = UA(lambda n: 415 if n == 0 else 200)
        engine = DeliveryEngine(store, ua.send, "A", counters)
        engine.kick("bob", "example.com", TARGET)
        await _wait_idle(engine)
        assert [b.rsplit(b"] ", 1)[-1] for b in ua.bodies] == [b"m0", b"m1", b"m2", b"m3"]
        rows = await store.list_messages()
        assert [r.id for r in rows] == [ids[0]]  # never deleted without a 2xx
        assert rows[0].claim_owner is None  # released when the dump ended
        assert counters.get("failed_messages") == 1
        assert counters.get("dumped_messages") == 3
        # retried at the next REGISTER
        ua.answer = lambda n: 200
        engine.kick("bob", "example.com", TARGET)
        await _wait_idle(engine)
        assert await store.list_messages() == []
        assert ua.bodies[-1].endswith(b"m0")
        await store.close()

    asyncio.run(main())


def test_a_new_contact_registered_during_a_failing_run_gets_the_messages(
        tmp_path: Path) -> None:
    """A phone that re-registers (woken by a push, from a new address) while the dump
    to its old contact times out is delivered to at once, not at its next REGISTER."""
    async def main() -> None:
        store, _ = await _setup(tmp_path, 2)
        woken = DeliveryTarget(SipUri.parse("sip:bob@127.0.0.1:5100"),
                               Target("udp", "127.0.0.1", 5100))
        engine: DeliveryEngine

        async def during(n: int) -> None:
            if n == 0:
                engine.kick("bob", "example.com", woken)

        ua = UA(lambda n: 408 if n == 0 else 200, during)
        targets: list[int] = []
        send = ua.send

        async def tracking(request: Request, target: Target) -> Response:
            targets.append(target.port)
            return await send(request, target)

        engine = DeliveryEngine(store, tracking, "A", Counters())
        engine.kick("bob", "example.com", TARGET)
        await _wait_idle(engine)
        assert targets == [5099, 5100, 5100]
        assert await store.list_messages() == []
        await engine.aclose()
        await store.close()

    asyncio.run(main())


def test_temporary_failure_ends_the_dump_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        store, ids = await _setup(tmp_path, 3)
        ua = UA(lambda n: 480 if n == 1 else 200)
        engine = DeliveryEngine(store, ua.send, "A", Counters())
        engine.kick("bob", "example.com", TARGET)
        await _wait_idle(engine)
        assert len(ua.bodies) == 2
        rows = await store.list_messages()
        assert [r.id for r in rows] == ids[1:]
        assert all(r.claim_owner is None for r in rows)
        await engine.aclose()
        await store.close()

    asyncio.run(main())


def test_leases_are_renewed_during_a_slow_dump(tmp_path: Path) -> None:
    async def main() -> None:
        store, _ = await _setup(tmp_path, 6)
        clock = Clock(time.time())
        stolen = []

        async def slow(n: int) -> None:
            # Each send takes 0.5 s: three seconds in all against a 2 s lease.
            # Another instance polling for lapsed claims meanwhile gets nothing.
            clock.now += 0.5
            stolen.extend(await store.claim_batch(
                "bob", "example.com", "B", int(clock()), 60, 32))

        ua = UA(lambda n: 200, slow)
        engine = DeliveryEngine(store, ua.send, "A", Counters(), claim_ttl=2, clock=clock)
        engine.kick("bob", "example.com", TARGET)
        await _wait_idle(engine)
        assert stolen == []
        assert len(ua.bodies) == 6
        assert await store.list_messages() == []  # confirm_many found every row still ours
        await store.close()

    asyncio.run(main())


def test_a_lost_lease_is_not_sent(tmp_path: Path) -> None:
    async def main() -> None:
        store, ids = await _setup(tmp_path, 3)

        async def taken_over(n: int) -> None:
            # while the first is in flight, another instance takes the later
            # rows over (as after a lapse)
            if n == 0:
                await store._submit(
                    lambda o: o.conn.execute(
                        "UPDATE silo SET claim_owner = 'B' WHERE id IN (?, ?)", (ids[1], ids[2])
                    )
                )

        ua = UA(lambda n: 200, taken_over)
        engine = DeliveryEngine(store, ua.send, "A", Counters(), claim_ttl=2)
        engine.kick("bob", "example.com", TARGET)
        await _wait_idle(engine)
        assert len(ua.bodies) == 1
        assert [(r.id, r.claim_owner) for r in await store.list_messages()] == [
            (ids[1], "B"), (ids[2], "B")
        ]
        await store.close()

    asyncio.run(main())


def test_no_dump_starts_once_stopping(tmp_path: Path) -> None:
    async def main() -> None:
        store, _ = await _setup(tmp_path, 1)
        ua = UA(lambda n: 200)
        engine = DeliveryEngine(store, ua.send, "A", Counters())
        engine.stop_starting()
        engine.kick("bob", "example.com", TARGET)
        assert not engine.active and not engine.busy("bob", "example.com")
        await engine.aclose()
        assert ua.bodies == [] and len(await store.list_messages()) == 1
        await store.close()

    asyncio.run(main())


def test_a_running_dump_finishes_its_message_on_shutdown(tmp_path: Path) -> None:
    async def main() -> None:
        store, ids = await _setup(tmp_path, 3)
        answered = asyncio.Event()

        async def in_flight(n: int) -> None:
            await answered.wait()  # the answer comes while the engine shuts down

        ua = UA(lambda n: 200, in_flight)
        engine = DeliveryEngine(store, ua.send, "A", Counters())
        engine.kick("bob", "example.com", TARGET)
        await ua.sent.wait()
        assert engine.busy("bob", "EXAMPLE.com")
        engine.stop_starting()
        asyncio.get_running_loop().call_soon(answered.set)
        await engine.aclose(timeout=2.0)
        assert len(ua.bodies) == 1
        rows = await store.list_messages()
        assert [r.id for r in rows] == ids[1:]  # the answered one is deleted
        assert all(r.claim_owner is None for r in rows)
        # Never sent: still waiting, as before the claim, so a live MESSAGE
        # for bob queues behind them (pending_elsewhere) instead of overtaking.
        assert [r.attempts for r in rows] == [0, 0]
        assert await store.pending_elsewhere("bob", "example.com", "B", int(time.time()))
        await store.close()

    asyncio.run(main())


def test_a_message_stored_while_the_worker_is_finishing_is_not_stranded(
    tmp_path: Path,
) -> None:
    """kick() while the worker, finding nothing, checks for blocked rows:
    the worker must look again instead of ending with the new row unsent."""

    async def main() -> None:
        store, _ = await _setup(tmp_path, 1)
        ua = UA(lambda n: 200)
        engine = DeliveryEngine(store, ua.send, "A", Counters())
        real_count_for = store.count_for
        stored_meanwhile = asyncio.Event()

        async def count_for(username: str, domain: str, now: int) -> int:
            # The worker found its batch empty and counts what is left: a new
            # MESSAGE arrives right then (stored, and the engine kicked).
            if not stored_meanwhile.is_set():
                stored_meanwhile.set()
                await store.store(msg(9, exp=int(time.time()) + 3600, body=b"late"))
                engine.kick("bob", "example.com", TARGET)
            return await real_count_for(username, domain, now)

        store.count_for = count_for  # type: ignore[method-assign]
        engine.kick("bob", "example.com", TARGET)
        await _wait_idle(engine)
        assert [b.rsplit(b"] ", 1)[-1] for b in ua.bodies] == [b"m0", b"late"]
        assert await store.list_messages() == []
        await store.close()

    asyncio.run(main())


def test_a_temporary_refusal_keeps_the_attempt_and_holds_no_live_message_back(
        tmp_path: Path) -> None:
    """bob's phone answers 480 to the first stored message: it and the rest
    wait for his next REGISTER, counted as tried, and live MESSAGEs meanwhile
    are relayed rather than stored behind them."""
    async def main() -> None:
        store, ids = await _setup(tmp_path, 3)
        ua = UA(lambda n: 480)
        engine = DeliveryEngine(store, ua.send, "A", Counters())
        engine.kick("bob", "example.com", TARGET)
        await _wait_idle(engine)
        rows = await store.list_messages()
        assert [r.id for r in rows] == ids and len(ua.bodies) == 1
        assert all(r.claim_owner is None and r.attempts == 1 for r in rows)
        assert not await store.pending_elsewhere("bob", "example.com", "B", int(time.time()))
        await engine.aclose()
        await store.close()

    asyncio.run(main())


def test_a_message_the_dump_fails_on_is_counted_as_tried(tmp_path: Path) -> None:
    """A delivery that breaks with an error (not a shutdown) counts as an
    attempt: such a row must not hold every live MESSAGE back for ever."""
    async def main() -> None:
        store, ids = await _setup(tmp_path, 2)

        async def broken(request: Request, target: Target) -> Response:
            raise ValueError("cannot build this one")

        engine = DeliveryEngine(store, broken, "A", Counters())
        engine.kick("bob", "example.com", TARGET)
        await _wait_idle(engine)
        rows = await store.list_messages()
        assert [r.id for r in rows] == ids
        assert all(r.claim_owner is None and r.attempts == 1 for r in rows)
        await engine.aclose()
        await store.close()

    asyncio.run(main())

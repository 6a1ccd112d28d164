"""PushService without sockets: one push per user per interval, coalesced; the interval
restarts on REGISTER; a dead token removes the target; RFC 8599 parameters are read
from the Contact URI (or its header parameters)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.silo.helpers import run

from sipsilo.config_push import PushConfig
from sipsilo.metrics import Counters
from sipsilo.push.pushers import Notice, Outcome
from sipsilo.push.service import PushService
from sipsilo.push.store import PushTarget, target_of_contact

AOR = "sip:bob@example.com"


class FakeTargets:
    def __init__(self) -> None:
        self.targets = {AOR: PushTarget(AOR, "fcm", "T", "P", "", 1)}
        self.saves = 0

    async def get(self, aor: str, now: float) -> PushTarget | None:
        return self.targets.get(aor)

    async def save(self, target: PushTarget) -> None:
        self.targets[target.aor] = target
        self.saves += 1

    async def remove(self, aor: str, prid: str) -> bool:
        return self.targets.pop(aor, None) is not None

    async def purge(self, now: float) -> int:
        return 0


class FakePusher:
    def __init__(self, outcome: Outcome = "sent") -> None:
        self.outcome = outcome
        self.notices: list[Notice] = []

    async def push(self, notice: Notice) -> tuple[Outcome, str]:
        self.notices.append(notice)
        return self.outcome, "test"


def _service(waiting: list[int], pusher: FakePusher, **cfg: object) -> tuple[
        PushService, FakeTargets, Counters]:
    targets, counters = FakeTargets(), Counters()

    async def count(user: str, domain: str) -> int:
        return waiting[0]

    svc = PushService(PushConfig(webhook_url="http://127.0.0.1:9/hook", **cfg),  # type: ignore[arg-type]
                      targets, count, counters, Path("."))  # type: ignore[arg-type]
    svc.pushers.for_provider = lambda provider: pusher  # type: ignore[method-assign]
    return svc, targets, counters


async def _settle(svc: PushService) -> None:
    while svc._tasks:
        await asyncio.gather(*svc._tasks)


def test_one_push_per_interval_then_one_coalesced_push() -> None:
    pusher, waiting = FakePusher(), [1]

    async def body() -> None:
        svc, _, counters = _service(waiting, pusher, min_interval=0.05)
        svc.stored(AOR, "bob", "example.com", "sip:a@x")
        await _settle(svc)
        for i in range(9):
            svc.stored(AOR, "bob", "example.com", f"sip:s{i}@x")
        await _settle(svc)
        assert len(pusher.notices) == 1 and AOR in svc._scheduled
        waiting[0] = 10
        await svc._scheduled[AOR]  # the end of the interval
        await _settle(svc)
        assert [(n.waiting, n.newest_from) for n in pusher.notices] == [
            (1, "sip:a@x"), (10, "sip:s8@x")]
        assert counters.get("push_sent") == 2
        await svc.aclose()

    run(body)


def test_register_restarts_the_interval_and_refreshes_the_target() -> None:
    pusher = FakePusher()

    async def body() -> None:
        svc, targets, _ = _service([3], pusher, min_interval=3600.0, privacy=True)
        svc.stored(AOR, "bob", "example.com", "sip:a@x")
        await _settle(svc)
        svc.stored(AOR, "bob", "example.com", "sip:a@x")
        scheduled = svc._scheduled[AOR]
        await svc.registered(AOR, PushTarget(AOR, "apns", "NEW", "t.app", "", 5))
        await asyncio.gather(scheduled, return_exceptions=True)
        assert scheduled.cancelled() and AOR not in svc._scheduled
        assert targets.targets[AOR].prid == "NEW"
        svc.stored(AOR, "bob", "example.com", "sip:a@x")  # at once, not in an hour
        await _settle(svc)
        assert [(n.target.prid, n.newest_from) for n in pusher.notices] == [("T", ""),
                                                                           ("NEW", "")]
        await svc.aclose()

    run(body)


def test_dead_token_removes_the_target_and_nothing_waiting_pushes_nothing() -> None:
    pusher, waiting = FakePusher("dead"), [1]

    async def body() -> None:
        svc, targets, counters = _service(waiting, pusher, min_interval=0.0)
        svc.stored(AOR, "bob", "example.com", "sip:a@x")
        await _settle(svc)
        assert targets.targets == {} and counters.get("push_removed") == 1
        targets.targets[AOR] = PushTarget(AOR, "fcm", "T", "", "", 1)
        waiting[0] = 0  # delivered meanwhile
        svc.stored(AOR, "bob", "example.com", "sip:a@x")
        await _settle(svc)
        assert len(pusher.notices) == 1
        await svc.aclose()

    run(body)


def test_target_of_contact() -> None:
    uri = (("pn-provider", "webpush"), ("pn-prid", "https%3A%2F%2Fpush.example%2Fs%2F1"),
           ("pn-param", "K.A"), ("transport", "tcp"))
    t = target_of_contact(AOR, uri, (("pn-prid", "ignored"),), now=7)
    assert t == PushTarget(AOR, "webpush", "https://push.example/s/1", "K.A", "", 7)
    assert target_of_contact(AOR, (), (("pn-provider", "FCM"), ("pn-prid", '"T"')),
                             now=1) == PushTarget(AOR, "fcm", "T", "", "", 1)
    assert target_of_contact(AOR, (("pn-provider", "fcm"),), ()) is None


def test_a_repeated_target_is_written_once_an_hour() -> None:
    async def body() -> None:
        svc, targets, _ = _service([1], FakePusher())
        for at in (100, 200, 3000, 3701):
            await svc.registered(AOR, PushTarget(AOR, "fcm", "T", "P", "", at))
        await svc.registered(AOR, PushTarget(AOR, "fcm", "T2", "P", "", 3702))
        assert targets.saves == 3  # 100, 3701 (an hour on), 3702 (a new token)
        await svc.aclose()

    run(body)

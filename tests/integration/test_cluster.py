"""Two real `sipsilo serve` processes sharing one PostgreSQL / MariaDB database.

Messages are stored through both; the recipient registers at both at once and gets
every message exactly once.  SIGKILL of the delivering instance mid-dump: the other
one delivers the rest after the dead one's claims lapse, none lost.
Each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

from sipsilo.silo.delivery import CLAIM_BATCH
from tests.integration.harness import ServerProcess
from tests.integration.silo_helpers import register, send_message, start_ua, wait_for
from tests.silo.sqlservers import sql

MakeServer = Callable[..., ServerProcess]


def settings(url: str) -> dict[str, Any]:
    # fr_timer 2 s makes the claim lease max(claim_ttl, fr_timer + 5) = 7 s, so the
    # crash test does not wait a minute for a dead instance's claim to lapse.
    return {"msilo.db_url": url, "registrar.db_url": url, "msilo.claim_ttl": 1,
            "tm.fr_timer": 2, "msilo.db_pool_max": 6, "msilo.add_date": 0}


def rows(url: str) -> int:
    return int(asyncio.run(sql(url, "SELECT COUNT(*) FROM silo"))[0][0])


def in_threads(*calls: Callable[[], object]) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def store_through(server: ServerProcess, tag: str, count: int) -> None:
    result, _ = send_message(server, calls=count, rate=800, timeout=40,
                             body=f"{tag} [call_number]\n")
    assert result.returncode == 0, result.stdout[-2000:]


def bodies(ua: Any) -> collections.Counter[str]:
    return collections.Counter(e.body.decode().strip() for e in ua.received())


def test_two_instances_deliver_each_message_exactly_once(
    shared_db: str, make_server: MakeServer
) -> None:
    a = make_server(**settings(shared_db))
    b = make_server(**settings(shared_db))
    in_threads(lambda: store_through(a, "A", 1000), lambda: store_through(b, "B", 1000))
    assert rows(shared_db) == 2000
    ua = start_ua(a, calls=2000, timeout=60)
    in_threads(lambda: register(a, ua.port), lambda: register(b, ua.port))
    wait_for(lambda: rows(shared_db) == 0, timeout=60, interval=0.5)
    ua.finish(30)
    got = bodies(ua)
    expected = {f"{tag} {i}" for tag in "AB" for i in range(1, 1001)}
    assert set(got) == expected
    assert max(got.values()) == 1, [k for k, v in got.items() if v > 1][:10]


def test_sigkill_mid_dump_the_other_instance_delivers_the_rest(
    shared_db: str, make_server: MakeServer
) -> None:
    a = make_server(**settings(shared_db))
    b = make_server(**settings(shared_db))
    store_through(a, "M", 300)
    ua = start_ua(a, calls=400, pause_ms=5, timeout=60)
    register(a, ua.port)
    wait_for(lambda: len(ua.received()) >= 60, timeout=30)
    a.kill()
    ua.proc.kill()
    left = rows(shared_db)
    assert 0 < left < 300, left  # killed mid-dump
    # A fresh UA: SIPp would take the redelivered in-flight message (same Call-ID) for a
    # retransmission of a call it already finished and ignore it.
    ua2 = start_ua(b, calls=400, timeout=60)

    # A's claim on the message in flight lapses after 7 s, then B's dump takes over.
    # (A REGISTER is what starts a dump, as in Kamailio.)
    def b_dumps() -> bool:
        register(b, ua2.port)
        return wait_for_quiet(lambda: rows(shared_db) == 0)

    wait_for(b_dumps, timeout=40, interval=1.0)
    ua2.proc.kill()
    got = bodies(ua) + bodies(ua2)
    assert set(got) == {f"M {i}" for i in range(1, 301)}  # none lost
    # Only the run A had claimed when it died may come twice (rows are deleted after a
    # run's 2xxs, together): at-least-once, at most CLAIM_BATCH repeats.
    assert sum(v - 1 for v in got.values()) <= CLAIM_BATCH, got.most_common(3)


def wait_for_quiet(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    try:
        wait_for(pred, timeout=timeout, interval=0.2)
    except AssertionError:
        return False
    return True

"""Expiry: an expired message is never delivered, the timer purges it, and
`sipsilo stats` counts it."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.integration.harness import ServerProcess
from tests.integration.silo_helpers import register, send_message, start_ua, stats, wait_for

MakeServer = Callable[..., ServerProcess]


def test_expired_messages_are_purged_and_counted(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.expire_time": 3600, "msilo.check_time": 1,
                            "msilo.clean_period": 1})
    send_message(server, body="short-lived\n", headers="Content-Type: text/plain\nExpires: 1\n")
    send_message(server, body="long-lived\n")
    assert len(server.rows()) == 2
    wait_for(lambda: [r["body"] for r in server.rows()] == [b"long-lived\r\n"], 5)
    assert stats(server)["msilo:expired_messages"] == 1

    ua = start_ua(server, calls=2, timeout=3)
    register(server, ua.port)
    ua.finish(10)
    assert [m.body.split(b"] ", 1)[1] for m in ua.received()] == [b"long-lived\r\n"]
    wait_for(lambda: server.rows() == [], 5)


def test_expire_time_applies_to_every_message(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.expire_time": 1, "msilo.check_time": 1,
                            "msilo.clean_period": 1})
    result, _ = send_message(server, calls=3, rate=100, body="soon gone [call_number]\n")
    assert result.returncode == 0, result.stdout
    wait_for(lambda: server.rows() == [], 5)
    wait_for(lambda: stats(server)["msilo:expired_messages"] == 3, 3)


def test_expired_but_not_yet_purged_is_never_delivered(make_server: MakeServer) -> None:
    # clean_period so long that the purge never runs during the test.
    server = make_server(**{"msilo.expire_time": 1, "msilo.check_time": 1,
                            "msilo.clean_period": 1000})
    send_message(server, body="stale\n")
    (row,) = server.rows()
    wait_for(lambda: time.time() >= row["exp_time"] + 0.2, 5)
    ua = start_ua(server, calls=1, timeout=2)
    register(server, ua.port)
    ua.finish(10)
    assert ua.received() == []
    assert len(server.rows()) == 1  # still there: only the purge removes it

    result = server.cli("silo", "purge", "--expired")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "purged 1 message"
    assert server.rows() == []

"""Durability: a 202 means the message is on disk. A server killed with
SIGKILL mid-burst loses nothing it accepted, and delivers it all after a
restart on the same data directory."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.harness import ServerProcess, finish_sipp
from tests.integration.silo_helpers import (
    count_202,
    log_path,
    parse_log,
    register,
    start_burst,
    start_ua,
    wait_for,
)

MakeServer = Callable[..., ServerProcess]


def test_sigkill_after_202_loses_nothing(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.check_time": 1})
    proc, port = start_burst(server, calls=200, rate=1000, timeout=6)
    wait_for(lambda: len(server.rows()) >= 100, 10, interval=0.01)
    server.kill()
    finish_sipp(proc, server, "silo_uac_message", port, timeout=20)
    accepted = count_202(parse_log(log_path(server, "silo_uac_message", port).read_bytes()))
    # Rows committed just before the kill may not have had their 202 sent yet:
    # stored-but-unanswered is allowed (the sender retries), answered-but-lost is not.
    assert accepted > 0

    restarted = make_server(data_dir=server.data_dir, **{"msilo.check_time": 1})
    rows = restarted.rows()
    assert len(rows) >= accepted
    assert len({r["body"] for r in rows}) == len(rows)

    ua = start_ua(restarted, calls=len(rows), timeout=20)
    register(restarted, ua.port)
    ua.finish(30)
    got = ua.received()
    assert [m.body.split(b"] ", 1)[1] for m in got] == [r["body"] for r in rows]
    wait_for(lambda: restarted.rows() == [], 5)

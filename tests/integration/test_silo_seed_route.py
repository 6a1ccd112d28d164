"""The seed's configuration transcribed into Python (examples/seed_route.py)
runs as the server's route and behaves like the default route: store → 202,
dump on REGISTER in order, failure route on 415."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import ServerProcess, SippResult, run_sipp
from tests.integration.silo_helpers import register, send_message, start_ua, stats, wait_for

MakeServer = Callable[..., ServerProcess]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def seed_server(make_server: MakeServer) -> ServerProcess:
    path = os.pathsep.join(p for p in (str(EXAMPLES), os.environ.get("PYTHONPATH")) if p)
    return make_server(env={"PYTHONPATH": path}, **{"server.route": "seed_route:route",
                                                    "msilo.check_time": 1})


def test_seed_route_stores_and_dumps_in_order(seed_server: ServerProcess) -> None:
    server = seed_server
    result, log = send_message(server, calls=3, rate=50, body="seed [call_number]\n")
    assert result.returncode == 0, result.stdout
    assert [e.status for e in log if not e.sent] == [202, 202, 202]
    rows = server.rows()
    assert [r["body"] for r in rows] == [f"seed {n}\r\n".encode() for n in (1, 2, 3)]

    ua = start_ua(server, calls=3, pause_ms=100)
    register(server, ua.port)
    ua.finish(10)
    got = ua.received()
    assert [m.body.split(b"] ", 1)[1] for m in got] == [r["body"] for r in rows]
    wait_for(lambda: server.rows() == [], 5)
    wait_for(lambda: "REGISTER received -> dumping messages with MSILO" in server.log())


def test_seed_route_stores_via_failure_route_on_415(seed_server: ServerProcess) -> None:
    server = seed_server
    ua = start_ua(server, calls=1, code=415, reason="Unsupported Media Type")
    register(server, ua.port)
    result, log = send_message(server, body="needs the silo\n")
    assert result.returncode == 0, result.stdout
    assert [e.status for e in log if not e.sent] == [202]
    ua.finish(10)
    rows = server.rows()
    assert [(r["username"], r["body"]) for r in rows] == [("bob", b"needs the silo\r\n")]
    assert stats(server)["msilo:stored_messages"] == 1
    wait_for(lambda: "MSILO:the downstream UA doesn't support MESSAGEs" in server.log())


def test_seed_route_answers_what_it_cannot_store(seed_server: ServerProcess) -> None:
    server = seed_server
    # not a MESSAGE, user offline: the seed's 404
    result = run_sipp("uac_options", server, keys={"ruser_at": "carol@", "max_forwards": 70},
                      subst={"expect": 404})
    assert isinstance(result, SippResult) and result.returncode == 0, result
    # a MESSAGE m_store refuses: its 4xx, not the seed's 503
    result, _ = send_message(server, body="x\n", headers="", expect=400)
    assert result.returncode == 0, result.stdout
    assert server.rows() == []

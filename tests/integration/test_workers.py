"""`sipsilo serve` with [server] workers = 2: one supervisor, two worker processes.

Users are picked so that both workers have some (workers.keys sends a request
to the worker of its target user: CRC-32 of the user part, modulo 2):
bob and dave go to worker 0, carol and frank to worker 1, alice to worker 1.
"""

from __future__ import annotations

import os
import signal
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import ServerProcess, free_port
from tests.integration.silo_helpers import register, send_message, start_ua, stats, wait_for

MakeServer = Callable[..., ServerProcess]
USERS = ["bob", "carol", "dave", "frank"]


def test_users_are_spread_over_both_workers() -> None:
    # The tests below mean something only if this holds.
    assert {zlib.crc32(u.encode()) % 2 for u in USERS} == {0, 1}
    assert zlib.crc32(b"alice") % 2 != zlib.crc32(b"bob") % 2


def _workers(make_server: MakeServer, **settings: object) -> ServerProcess:
    port = free_port()
    return make_server(port=port, **{
        "server.workers": 2, "server.listen": [f"udp:127.0.0.1:{port}"],
        "msilo.add_date": 0, **settings,
    })


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_messages_for_users_of_both_workers_are_delivered_once_in_order(
    make_server: MakeServer,
) -> None:
    server = _workers(make_server)
    for user in USERS:
        result, _ = send_message(server, to_user=user, body=f"{user} [call_number]\n", calls=3)
        assert result.returncode == 0, result.stdout
    assert len(server.rows()) == 12

    uas = {user: start_ua(server, calls=3, timeout=15) for user in USERS}
    for user, ua in uas.items():
        register(server, ua.port, user=user)
    for user, ua in uas.items():
        ua.finish(20)
        got = ua.received()
        assert [m.body for m in got] == [f"{user} {n}\r\n".encode() for n in (1, 2, 3)], user
        assert all(m.start.startswith(f"MESSAGE sip:{user}@") for m in got)
    wait_for(lambda: server.rows() == [], 5)
    st = stats(server)
    assert st["server:workers"] == 2
    assert st["msilo:stored_messages"] == 12
    assert st["msilo:dumped_messages"] == 12
    assert st["usrloc:registered_contacts"] == 4


def test_responses_reach_the_worker_that_relayed_the_request(make_server: MakeServer) -> None:
    # A MESSAGE to an online user is relayed by the user's worker; the phone's
    # 200 must reach that worker (by the tag in the Via branch), or its client
    # transaction would retransmit the MESSAGE and answer the sender 408.
    server = _workers(make_server)
    uas = {user: start_ua(server, calls=1, timeout=15) for user in USERS}
    for user, ua in uas.items():
        register(server, ua.port, user=user)
    for user in USERS:
        result, _ = send_message(server, to_user=user, body=f"live for {user}\n", expect=200)
        assert result.returncode == 0, result.stdout
    time.sleep(1.0)  # a first retransmission would come 0.5 s after the send
    for user, ua in uas.items():
        ua.finish(10)
        copies = [e for e in ua.entries() if not e.sent and e.is_request]
        assert len(copies) == 1, (user, [c.raw for c in copies])
    assert server.rows() == []


def test_offline_notice_reaches_a_sender_registered_at_the_other_worker(
    make_server: MakeServer,
) -> None:
    # alice (worker 1) is registered; her MESSAGE to offline bob is stored by
    # worker 0, whose copy of the location service must know where alice is.
    server = _workers(make_server, **{"msilo.registrar": "sip:registrar@mydomain.com",
                                      "msilo.use_contact": 0})
    phone = start_ua(server, calls=1, timeout=15)
    register(server, phone.port, user="alice")
    result, _ = send_message(server, to_user="bob", body="are you there?\n")
    assert result.returncode == 0, result.stdout
    phone.finish(10)
    notices = phone.received()
    assert len(notices) == 1
    assert notices[0].header("From").startswith("<sip:registrar@mydomain.com>")  # type: ignore[union-attr]
    assert b"bob" in notices[0].body or b"offline" in notices[0].body.lower()
    assert len(server.rows()) == 1


def test_location_list_shows_registrations_of_every_worker(make_server: MakeServer) -> None:
    server = _workers(make_server)
    ports = {user: free_port({server.port}) for user in USERS}
    for user, port in ports.items():
        register(server, port, user=user)
    out = server.cli("location", "list")
    assert out.returncode == 0, out.stderr
    for user, port in ports.items():
        assert f"sip:{user}@127.0.0.1:{port}" in out.stdout


def test_sigterm_stops_supervisor_and_workers(make_server: MakeServer) -> None:
    server = _workers(make_server)
    assert server.proc is not None
    workers = _children(server.proc.pid)
    assert len(workers) == 2
    assert server.stop() == 0
    wait_for(lambda: not any(_alive(p) for p in workers), 10)
    log = server.log()
    assert "w0 sipsilo: shutting down" in log and "w1 sipsilo: shutting down" in log
    assert "Traceback" not in log


def test_a_dead_worker_stops_the_server_with_status_1(make_server: MakeServer) -> None:
    server = _workers(make_server)
    assert server.proc is not None
    workers = _children(server.proc.pid)
    os.kill(workers[1], signal.SIGKILL)
    assert server.proc.wait(15) == 1
    assert "exited unexpectedly" in server.log()
    wait_for(lambda: not _alive(workers[0]), 10)


def test_workers_stop_when_the_supervisor_is_killed(make_server: MakeServer) -> None:
    server = _workers(make_server)
    assert server.proc is not None
    workers = _children(server.proc.pid)
    server.kill()
    # At once, not after fr_timer: no answer can reach an orphaned worker.
    wait_for(lambda: not any(_alive(p) for p in workers), 5)
    assert "supervisor gone; stopping now" in server.log()


@pytest.mark.parametrize("listen", [None, "tcp"])
def test_workers_with_a_tcp_listener_is_a_config_error(tmp_path: Path, listen: str | None) -> None:
    import subprocess
    import sys

    args = [sys.executable, "-m", "sipsilo", "serve", "--data-dir", str(tmp_path),
            "--set", "server.workers=2"]
    if listen:
        args += ["--set", "server.listen=tcp:127.0.0.1:5999"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSILO_")}
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 2
    assert "several worker processes serve UDP only" in out.stderr
    assert "Traceback" not in out.stderr



def test_port_in_use_is_one_line_and_leaves_no_worker_behind(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSILO_")}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sipsilo", "serve", "--data-dir", str(tmp_path),
             "--set", "server.workers=2", "--set", f"server.listen=udp:127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        workers: list[int] = []
        while proc.poll() is None and time.monotonic() - started < 20:
            workers = workers or _children(proc.pid)
            time.sleep(0.05)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.splitlines()[-1].startswith(
        f"sipsilo: error: cannot listen on udp:127.0.0.1:{port}: address already in use: ")
    assert "Traceback" not in err
    assert time.monotonic() - started < 10  # not the workers' stop timeout
    assert not any(_alive(p) for p in workers)

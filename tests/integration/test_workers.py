"""`sipsilo serve` with [server] workers = 2: one supervisor, two worker processes.

Users are picked so that both workers have some (workers.keys sends a request
to the worker of its target user: CRC-32 of the user part, modulo 2):
bob and dave go to worker 0, carol and frank to worker 1, alice to worker 1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.integration.harness import ServerProcess, free_port
from tests.integration.secure_clients import (
    SecureClient,
    UdpPhone,
    make_certs,
    ok_for,
    register_udp,
    udp_message,
)
from tests.integration.silo_helpers import register, send_message, start_ua, stats, wait_for

MakeServer = Callable[..., ServerProcess]
USERS = ["bob", "carol", "dave", "frank"]
DOMAIN = "127.0.0.1"


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


def test_a_worker_dying_again_and_again_stops_the_server_with_status_1(
        make_server: MakeServer) -> None:
    """One death gets a new worker; a fourth within a minute is a crash loop
    that only the process manager (and whoever reads its log) can end."""
    server = _workers(make_server)
    assert server.proc is not None
    survivor = min(_children(server.proc.pid))
    for death in range(1, 5):
        victim = max(_children(server.proc.pid))
        os.kill(victim, signal.SIGKILL)
        if death < 4:
            wait_for(lambda d=death: server.log().count("restarted") == d, 20)
            assert server.proc.poll() is None
    assert server.proc.wait(15) == 1
    assert server.log().count("exited unexpectedly") == 4
    wait_for(lambda: not _alive(survivor), 10)


def test_workers_stop_when_the_supervisor_is_killed(make_server: MakeServer) -> None:
    server = _workers(make_server)
    assert server.proc is not None
    workers = _children(server.proc.pid)
    server.kill()
    # At once, not after fr_timer: no answer can reach an orphaned worker.
    wait_for(lambda: not any(_alive(p) for p in workers), 5)
    assert "supervisor gone; stopping now" in server.log()


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


# ---------------------------------------------------------------- every transport

def _every_transport(make_server: MakeServer, data_dir: Path, **settings: object
                     ) -> tuple[ServerProcess, dict[str, int], Path]:
    certs = make_certs(data_dir)
    ports: dict[str, int] = {}
    for kind in ("udp", "tcp", "tls", "ws"):
        ports[kind] = free_port(set(ports.values()))
    server = make_server(data_dir=data_dir, port=ports["udp"], **{
        "server.workers": 2, "msilo.add_date": 0,
        "server.listen": [f"{kind}:127.0.0.1:{port}" for kind, port in ports.items()],
        "tls.certificate": "cert.pem", "tls.private_key": "key.pem", **settings,
    })
    return server, ports, certs.ca


def _taken_over(server: ServerProcess) -> int:
    return int(stats(server).get("msilo:taken_over", 0))


def _at_the_other_worker(server: ServerProcess, ports: dict[str, int], user: str = "bob",
                         kind: str = "tcp") -> SecureClient:
    """*user* registered over one connection held by the worker that does NOT
    get his UDP requests (workers.keys: bob's go to worker 0, carol's to 1):
    reconnect until the kernel puts his connection there, which the hand-over
    counter shows."""
    for attempt in range(16):
        phone = SecureClient(kind, ports[kind])
        assert (phone.register(user, DOMAIN) or "").startswith("SIP/2.0 200")
        before = _taken_over(server)
        assert _live_udp(ports["udp"], phone, f"probe {attempt}", user) == "SIP/2.0 200 OK"
        if _taken_over(server) > before:
            return phone
        phone.register(user, DOMAIN, expires=0)
        phone.close()
    raise AssertionError("16 connections in a row went to one worker")


def test_every_transport_is_served_by_both_workers(make_server: MakeServer,
                                                   tmp_path: Path) -> None:
    server, ports, ca = _every_transport(make_server, tmp_path / "all")
    assert "tcp:127.0.0.1" in server.log() and "ws:127.0.0.1" in server.log()
    # Stored while bob is offline, over every transport (whatever worker took each).
    senders = [SecureClient("tcp", ports["tcp"]), SecureClient("tls", ports["tls"], ca),
               SecureClient("ws", ports["ws"])]
    for n, client in enumerate(senders):
        assert client.send_message("alice", "bob", DOMAIN, f"stored {n}") == \
            "SIP/2.0 202 Accepted"
    assert udp_message(ports["udp"], "bob", "stored 3") == "SIP/2.0 202 Accepted"
    bob = SecureClient("tcp", ports["tcp"])
    assert (bob.register("bob", DOMAIN) or "").startswith("SIP/2.0 200")
    assert bob.receive_messages(4) == [f"stored {n}" for n in range(4)]
    bob.register("bob", DOMAIN, expires=0)
    for client in (bob, *senders):
        client.close()

    # Live: bob's connection is held by the worker his UDP requests do not go to.
    bob = _at_the_other_worker(server, ports)
    before = _taken_over(server)
    assert _live_udp(ports["udp"], bob, "live udp") == "SIP/2.0 200 OK"
    assert _taken_over(server) == before + 1
    # Over TCP: a sender whose connection is at bob's worker, and one at the other.
    for index, handed in ((1, 0), (0, 1)):
        base = _per_worker(server, "tcp:open_connections")
        sender = _connect_at(server, ports, index)
        taken = _taken_over(server)
        sender.send(sender.message("alice", "bob", DOMAIN, f"live tcp {index}"))
        assert bob.receive_messages(1) == [f"live tcp {index}"]
        assert (_final(sender) or "").startswith("SIP/2.0 200")
        assert _taken_over(server) == taken + handed
        sender.close()
        wait_for(lambda b=base: _per_worker(server, "tcp:open_connections") == b, 5)
    # A web client (WebSocket, outbound-style): reached only over its connection.
    carol = _at_the_other_worker(server, ports, "carol", "ws")
    assert _live_udp(ports["udp"], carol, "live for the web", "carol") == "SIP/2.0 200 OK"
    carol.close()

    # bob's connection closes: a MESSAGE handed over to its owner now fails
    # there (430), and the sending worker stores it (202) for his next REGISTER.
    base = _per_worker(server, "tcp:open_connections")
    bob.close()
    wait_for(lambda: _per_worker(server, "tcp:open_connections") == [base[0], base[1] - 1], 5)
    stored = _per_worker(server, "msilo:stored_messages")
    assert udp_message(ports["udp"], "bob", "while away") == "SIP/2.0 202 Accepted"
    assert stats(server)["msilo:handover_failed"] == 1
    assert _per_worker(server, "msilo:stored_messages") == [stored[0] + 1, stored[1]]
    # ... and worker 1 delivers it, over bob's new connection there.
    again = _connect_at(server, ports, 1)
    assert (again.register("bob", DOMAIN) or "").startswith("SIP/2.0 200")
    assert again.receive_messages(1) == ["while away"]
    wait_for(lambda: server.rows() == [], 5)


def test_a_handed_over_message_waits_for_a_phone_slower_than_the_hop_deadline(
        make_server: MakeServer, tmp_path: Path) -> None:
    """bob's phone answers 6 s after it got the MESSAGE that the other worker
    handed over (a phone woken from sleep): past the 3 s a hop connection has
    to prove itself, within the transaction's 10 s. The sender gets bob's 200,
    and nothing is stored: bob gets the message once, not again at his next
    REGISTER."""
    server, ports, _ = _every_transport(make_server, tmp_path / "slow")
    # bob's UDP requests go to worker 0 (workers.keys); his connection is at 1,
    # and this MESSAGE is the first hand-over: the hop connection is new.
    bob = _connect_at(server, ports, 1)
    assert (bob.register("bob", DOMAIN) or "").startswith("SIP/2.0 200")
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(udp_message, ports["udp"], "bob", "take your time", 15.0)
        got = bob.recv(10) or ""
        assert got.startswith("MESSAGE ") and got.endswith("take your time")
        time.sleep(6.0)  # the slow phone itself, not a wait for the server
        bob.send(ok_for(got))
        assert sent.result() == "SIP/2.0 200 OK"
    assert _taken_over(server) == 1
    assert server.rows() == []
    again = SecureClient("tcp", ports["tcp"])
    assert (again.register("bob", DOMAIN) or "").startswith("SIP/2.0 200")
    assert again.recv(1.0) is None  # no second copy


def test_a_worker_killed_mid_dump_is_replaced_and_the_dump_goes_on_in_order(
        make_server: MakeServer, tmp_path: Path) -> None:
    """bob, online over UDP, is getting 40 stored messages from worker 0 (his
    UDP requests go there) when it is killed. The worker started in its place
    takes back its claims and goes on with the dump: bob gets every message
    without registering again, in order; those delivered before the crash
    may come again, with their Call-ID."""
    server, ports, _ = _every_transport(make_server, tmp_path / "mid")
    bodies = [f"m{i:02d}" for i in range(40)]
    for body in bodies:
        assert udp_message(ports["udp"], "bob", body) == "SIP/2.0 202 Accepted"
    phone = UdpPhone(delay=0.05)
    try:
        register_udp(ports["udp"], f"sip:bob@127.0.0.1:{phone.port}")
        wait_for(lambda: len(phone.got) >= 5, 10)
        assert server.proc is not None
        os.kill(sorted(_children(server.proc.pid))[0], signal.SIGKILL)  # the first started
        wait_for(lambda: "restarted" in server.log(), 20)
        assert "worker 0 exited unexpectedly" in server.log()
        # No REGISTER, no MESSAGE: the new worker goes on by itself.
        wait_for(lambda: {b for _, b in phone.got} == set(bodies), 20)
        # After them: relayed (200), or stored behind them while the dump
        # finishes its bookkeeping (202) and delivered by it.
        assert udp_message(ports["udp"], "bob", "live") in (
            "SIP/2.0 200 OK", "SIP/2.0 202 Accepted")
        wait_for(lambda: "live" in phone.bodies, 10)
    finally:
        phone.close()
    first: dict[str, str] = {}
    for call_id, body in phone.got:
        assert first.setdefault(body, call_id) == call_id  # a copy has its Call-ID
    assert list(first) == [*bodies, "live"]
    assert "resumed 1 of 1 dumps" in server.log()


def _connect_at(server: ServerProcess, ports: dict[str, int], index: int) -> SecureClient:
    """A TCP connection that worker *index* accepted (reconnecting until it is)."""
    before = _per_worker(server, "tcp:open_connections")
    for _ in range(16):
        client = SecureClient("tcp", ports["tcp"])
        wait_for(lambda: sum(_per_worker(server, "tcp:open_connections")) == sum(before) + 1, 5)
        if _per_worker(server, "tcp:open_connections")[index] == before[index] + 1:
            return client
        client.close()
        wait_for(lambda: _per_worker(server, "tcp:open_connections") == before, 5)
    raise AssertionError("16 connections in a row went to one worker")


def _live_udp(port: int, phone: SecureClient, body: str, user: str = "bob") -> str | None:
    """A MESSAGE for *user* over UDP while his phone answers it; the sender's final."""
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(udp_message, port, user, body)
        assert phone.receive_messages(1) == [body]
        return sent.result()


def test_the_hand_over_is_not_held_to_the_per_source_cap(make_server: MakeServer,
                                                          tmp_path: Path) -> None:
    """The workers connect to each other from 127.0.0.1, as local clients do: a
    full per-address cap for 127.0.0.1 must not stop the hand-over."""
    server, ports, _ = _every_transport(make_server, tmp_path / "cap", **{
        "server.tcp_max_connections_per_ip": 1, "server.tcp_message_timeout": 120})
    for _ in range(16):  # bob's connection at worker 1 (his UDP requests go to 0)
        bob = SecureClient("tcp", ports["tcp"])
        assert (bob.register("bob", DOMAIN) or "").startswith("SIP/2.0 200")
        if _per_worker(server, "tcp:open_connections") == [0, 1]:
            break
        bob.register("bob", DOMAIN, expires=0)
        bob.close()
        wait_for(lambda: stats(server)["tcp:open_connections"] == 0, 5)
    assert _per_worker(server, "tcp:open_connections") == [0, 1]
    idle = [socket.create_connection(("127.0.0.1", ports["tcp"])) for _ in range(8)]
    wait_for(lambda: _per_worker(server, "tcp:open_connections") == [1, 2], 5)  # caps full
    assert _live_udp(ports["udp"], bob, "through a full cap") == "SIP/2.0 200 OK"
    assert _per_worker(server, "msilo:taken_over") == [0, 1]
    for conn in idle:
        conn.close()


def _final(client: SecureClient) -> str | None:
    while True:
        got = client.recv(5)
        if got is None:
            return None
        first = got.split("\r\n", 1)[0]
        if first.startswith("SIP/2.0 ") and int(first.split()[1]) >= 200:
            return first


def _per_worker(server: ServerProcess, key: str) -> list[int]:
    """One figure of each worker's own stats (its control socket, as the supervisor asks)."""
    out = []
    for index in range(2):
        path = server.data_dir / f"sipsilo.ctl.{index}"
        wait_for(path.exists, 10)  # a worker opens it last when it starts
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            sock.sendall(b'{"cmd": "stats"}\n')
            data = b""
            while not data.endswith(b"\n"):
                data += sock.recv(65536)
        out.append(int(json.loads(data)["result"].get(key, 0)))
    return out


def _answering(phone: SecureClient, body: str, send: Callable[[], str | None]) -> str | None:
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(send)
        assert phone.receive_messages(1) == [body]
        return sent.result()


def test_sigkill_of_a_worker_holding_tcp_connections_loses_nothing(
        make_server: MakeServer, tmp_path: Path) -> None:
    """The supervisor starts a new worker in its place; the users whose
    connections it held register again and get what was stored meanwhile;
    the other worker's users stay reachable all along."""
    server, ports, _ = _every_transport(make_server, tmp_path / "kill")
    phones: dict[str, SecureClient] = {}
    for n in range(32):  # until both workers hold some phones
        user = f"user{n}"
        phones[user] = SecureClient("tcp", ports["tcp"])
        assert (phones[user].register(user, DOMAIN) or "").startswith("SIP/2.0 200")
        if n >= 3 and min(_per_worker(server, "tcp:open_connections")) > 0:
            break
    assert udp_message(ports["udp"], "erin", "accepted before") == "SIP/2.0 202 Accepted"
    assert server.proc is not None
    workers = sorted(_children(server.proc.pid))
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: "restarted" in server.log(), 20)
    assert server.proc.poll() is None  # the server goes on
    assert "exited unexpectedly" in server.log()
    lost = {u for u, phone in phones.items() if phone.wait_closed(0.5)}
    kept = set(phones) - lost
    assert lost and kept
    for user in sorted(lost):
        assert udp_message(ports["udp"], user, f"meanwhile {user}") == "SIP/2.0 202 Accepted"
    for user in sorted(kept):  # still registered, over their connections
        body = f"live {user}"
        assert _answering(phones[user], body,
                          lambda u=user, b=body: udp_message(ports["udp"], u, b)) \
            == "SIP/2.0 200 OK"
    for user in sorted(lost):
        phone = SecureClient("tcp", ports["tcp"])
        assert (phone.register(user, DOMAIN) or "").startswith("SIP/2.0 200")
        assert phone.receive_messages(1) == [f"meanwhile {user}"]
    erin = SecureClient("tcp", ports["tcp"])
    assert (erin.register("erin", DOMAIN) or "").startswith("SIP/2.0 200")
    assert erin.receive_messages(1) == ["accepted before"]
    wait_for(lambda: server.rows() == [], 5)
    assert len(_children(server.proc.pid)) == 2

"""Issue 16: any user reachable from any instance (the flow owner across instances).

Two or three real `sipsilo serve` processes share one PostgreSQL / MariaDB database
(bindings and silo) and one server secret, each with `[cluster] advertise` (its
internal hop listener). bob registers over TCP at A with an RFC 5626 outbound Contact
(`.invalid` host, `reg-id`, `+sip.instance`): only A can write to his connection, so
a MESSAGE for him arriving at B or C is relayed to A's hop (a signed Route entry) and
goes out over the connection; the sender gets bob's 200. A killed: B and C store (202),
and bob gets those messages when he registers again anywhere.

The shared_db fixture (tests/integration/conftest.py) gives each test a database of
its own on PostgreSQL and on MariaDB. Digest replay of a nonce used at A refused at
B: tests/integration/test_auth_shared.py (`[cluster] redis_url`).

CLUSTER_MESSAGES sets the size of the bulk test (default 10,000: about 18 s on
PostgreSQL on the 2-core development machine, see docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ServerProcess
from tests.integration.secure_clients import SecureClient, ok_for, udp_message
from tests.integration.silo_helpers import stats, wait_for
from tests.silo.sqlservers import sql

MakeServer = Callable[..., ServerProcess]
DOMAIN = "127.0.0.1"
PRE = 30  # messages per sender stored before bob registers (bulk test)


def instances(make_server: MakeServer, tmp_path: Path, url: str, count: int,
              **extra: Any) -> list[ServerProcess]:
    """*count* instances on one database, one server secret, each with a hop listener."""
    secret = secrets.token_hex(32) + "\n"
    out = []
    for i in range(count):
        d = tmp_path / f"inst{i}"
        d.mkdir()
        (d / "auth.secret").write_text(secret)
        (d / "auth.secret").chmod(0o600)
        out.append(make_server(data_dir=d, **{
            "msilo.db_url": url, "registrar.db_url": url, "msilo.add_date": 0,
            "msilo.claim_ttl": 1, "tm.fr_timer": 2, "msilo.db_pool_max": 6,
            "cluster.advertise": "127.0.0.1:0", "cluster.instance_id": f"inst{i}",
            "cluster.heartbeat_interval": 1, **extra}))
    return out


class Bob:
    """bob's phone: RFC 5626 outbound over TCP, one Contact whatever the instance."""

    def __init__(self, instance: str | None = None) -> None:
        self.instance = instance or str(uuid.uuid4())
        self.call_id = uuid.uuid4().hex
        self.cseq = 0

    def register(self, server: ServerProcess, expires: int = 300) -> SecureClient:
        conn = SecureClient("tcp", server.port)
        self.cseq += 1
        text = (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n{conn.via()}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:bob@{DOMAIN}>;tag=r{self.cseq}\r\nTo: <sip:bob@{DOMAIN}>\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:bob@k3x9q0.invalid;transport=tcp>;reg-id=1"
            f";+sip.instance=\"<urn:uuid:{self.instance}>\";expires={expires}\r\n"
            "Supported: path, outbound\r\nContent-Length: 0\r\n\r\n")
        conn.send(text)
        while True:  # a stored message may come before the 200
            got = conn.recv(5)
            assert got is not None, "no answer to REGISTER"
            if got.startswith("SIP/2.0 200"):
                return conn
            if got.startswith("MESSAGE "):
                conn._messages.insert(0, got.encode())  # for receive_messages
                continue
            raise AssertionError(got.split("\r\n", 1)[0])


def answering(phone: SecureClient, body: str, send: Callable[[], str | None]) -> str | None:
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(send)
        assert phone.receive_messages(1) == [body]
        return sent.result()


def rows(url: str) -> int:
    return int(asyncio.run(sql(url, "SELECT COUNT(*) FROM silo"))[0][0])


@pytest.mark.parametrize("count", [2, 3])
def test_bob_at_a_is_reached_from_every_instance_and_nothing_is_lost_when_a_dies(
        shared_db: str, make_server: MakeServer, tmp_path: Path, count: int) -> None:
    servers = instances(make_server, tmp_path, shared_db, count)
    a, others = servers[0], servers[1:]
    # Stored through B while bob is away; delivered by A over his new connection.
    assert udp_message(others[0].port, "bob", "stored via B") == "SIP/2.0 202 Accepted"
    bob = Bob()
    phone = bob.register(a)
    assert phone.receive_messages(1) == ["stored via B"]
    wait_for(lambda: rows(shared_db) == 0, 5)
    # Live from B (and C): relayed to A's hop, out over bob's connection, 200 back.
    for server in others:
        body = f"live via {server.port}"
        assert answering(phone, body, lambda s=server, b=body: udp_message(s.port, "bob", b)) \
            == "SIP/2.0 200 OK"
        assert int(stats(server).get("msilo:handed_over", 0)) >= 1
    assert int(stats(a).get("msilo:taken_over", 0)) == len(others)
    assert rows(shared_db) == 0

    a.kill()  # SIGKILL: bob's connection and A's hop are gone, his binding stays
    assert phone.wait_closed(5)
    for n, server in enumerate(others):
        assert udp_message(server.port, "bob", f"while A is down {n}") == \
            "SIP/2.0 202 Accepted"
    assert rows(shared_db) == len(others)
    again = bob.register(others[-1])  # anywhere else
    assert again.receive_messages(len(others)) == \
        [f"while A is down {n}" for n in range(len(others))]
    wait_for(lambda: rows(shared_db) == 0, 5)
    again.close()


def test_a_forged_or_stale_hop_entry_is_refused(
        shared_db: str, make_server: MakeServer, tmp_path: Path) -> None:
    """The hop listener takes only entries signed with the shared secret."""
    instances(make_server, tmp_path, shared_db, 1)
    hop = asyncio.run(sql(shared_db, "SELECT hop FROM sipsilo_instances"))[0][0]
    host_port = hop.split(":", 1)[1].split(";", 1)[0]
    port = int(host_port.split(":")[1])
    forged = SecureClient("tcp", port)
    msg = forged.message("alice", "bob", DOMAIN, "forged")
    head, rest = msg.split("\r\n", 1)
    route = f"Route: <{hop};lr;flow=dGNwfDF8MTI3LjAuMC4xfDU.000000000000000000000000>\r\n"
    forged.send(head + "\r\n" + route + rest)
    got = forged.recv(5)
    assert got is not None and got.startswith("SIP/2.0 403"), got
    forged.close()


def test_cluster_status_lists_live_instances_with_bindings_and_claims(
        shared_db: str, make_server: MakeServer, tmp_path: Path) -> None:
    a, b = instances(make_server, tmp_path, shared_db, 2, **{"cluster.stale_after": 3})
    phone = Bob().register(a)
    out = a.cli("cluster", "status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["INSTANCE", "HOP", "UP", "SEEN", "BINDINGS", "CLAIMS"]
    by_name = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert set(by_name) == {"inst0", "inst1"}
    assert by_name["inst0"][1].startswith("sip:127.0.0.1:")
    assert by_name["inst0"][4:] == ["1", "0"] and by_name["inst1"][4:] == ["0", "0"]
    js = b.cli("--json", "cluster", "status")
    assert js.returncode == 0, js.stderr
    data = [json.loads(line) for line in js.stdout.splitlines()]
    assert {d["instance"]: d["bindings"] for d in data} == {"inst0": 1, "inst1": 0}
    phone.close()
    b.kill()  # its row goes stale after stale_after
    wait_for(lambda: [ln.split()[0] for ln in a.cli("cluster", "status").stdout
                      .splitlines()[1:]] == ["inst0"], 10, 0.5)
    a.stop()  # stopped in order: its row goes
    out = b.cli("cluster", "status")
    assert out.returncode == 0 and out.stdout.strip() == "no live instances", out.stdout


# ------------------------------------------------------------------ bulk

def sender(server: ServerProcess, tag: str, count: int, results: list[str],
           first: int = 0) -> None:
    """Sequential MESSAGEs from one sender (the next after the last's final)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        local = sock.getsockname()[1]
        for n in range(first, first + count):
            body = f"{tag} {n}"
            call = f"bulk-{tag}-{n}-{local}"
            text = (
                f"MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};rport;branch=z9hG4bK{call}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:{tag}@{DOMAIN}>;tag=s{local}\r\n"
                f"To: <sip:bob@{DOMAIN}>\r\nCall-ID: {call}\r\nCSeq: 1 MESSAGE\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n{body}")
            sock.sendto(text.encode(), ("127.0.0.1", server.port))
            while True:
                first = sock.recv(65535).decode().split("\r\n", 1)[0]
                if int(first.split()[1]) >= 200:
                    results.append(first)
                    break


def test_bulk_through_three_instances_each_once_in_order_per_sender(
        shared_db: str, make_server: MakeServer, tmp_path: Path) -> None:
    total = int(os.environ.get("CLUSTER_MESSAGES", "10000"))
    servers = instances(make_server, tmp_path, shared_db, 3, **{"server.log_level": "info"})
    # Stored first, so that dumps run while the live messages come: those must
    # queue behind the stored ones whichever instance is dumping (the database's
    # pending_elsewhere check), or they would overtake them.
    stored: list[str] = []
    for i, s in enumerate(servers):
        sender(s, f"s{i}", PRE, stored)
    assert stored == ["SIP/2.0 202 Accepted"] * 3 * PRE
    bob = Bob()
    # One binding (same Contact, +sip.instance and reg-id); its owner: the last
    # REGISTER's. A dump started by an earlier REGISTER may still use an earlier
    # connection: every connection answers, one delivery at a time per user.
    conns = [bob.register(s) for s in servers]
    got: list[str] = []
    stop = threading.Event()

    def answer(phone: SecureClient) -> None:
        while not stop.is_set():
            msg = phone.recv(0.5)
            if msg is not None and msg.startswith("MESSAGE "):
                phone.send(ok_for(msg))
                got.append(msg.split("\r\n\r\n", 1)[1])

    readers = [threading.Thread(target=answer, args=(c,)) for c in conns]
    for reader in readers:
        reader.start()
    results: list[str] = []
    counts = [total // 3 + (1 if i < total % 3 else 0) - PRE for i in range(3)]
    started = time.monotonic()
    try:
        threads = [threading.Thread(target=sender, args=(s, f"s{i}", counts[i], results, PRE))
                   for i, s in enumerate(servers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        wait_for(lambda: len(got) >= total and rows(shared_db) == 0, 120, 0.5)
    finally:
        stop.set()
        for reader in readers:
            reader.join(5)
    elapsed = time.monotonic() - started
    print(f"{total} messages through 3 instances in {elapsed:.1f} s; finals:",
          {k: results.count(k) for k in set(results)})
    assert len(results) == total - 3 * PRE
    assert len(got) == total and len(set(got)) == total  # each once
    for i in range(3):
        mine = [int(b.split()[1]) for b in got if b.startswith(f"s{i} ")]
        assert mine == list(range(PRE + counts[i]))  # in order per sender

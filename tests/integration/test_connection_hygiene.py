"""Attacks on the connection slots and buffers of a real server, over loopback TCP.

Each test reproduces one way a peer used to hold what other clients need:
trickling one byte a second so that a connection never looks idle
(slowloris), opening every slot from one address, and sending an endless
header block. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.integration.harness import ServerProcess
from tests.integration.silo_helpers import wait_for
from tests.integration.sipwire import read_reply, status_line, tcp_exchange, udp_exchange

SECOND_IP = "127.0.0.2"  # another loopback source: another client


def sip_request(port: int, method: str, call_id: str, *, extra: tuple[str, ...] = (),
                end: bool = True) -> bytes:
    """A TCP request; with end=False only its first header lines (no blank line)."""
    uri = f"sip:127.0.0.1:{port}"
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/TCP 127.0.0.1:5999;rport;branch=z9hG4bK-{call_id}",
             "Max-Forwards: 70", "From: <sip:tester@127.0.0.1>;tag=hyg",
             f"To: <sip:tester@127.0.0.1:{port}>", f"Call-ID: {call_id}",
             f"CSeq: 1 {method}", *extra]
    if not end:
        return ("\r\n".join(lines) + "\r\n").encode()
    return ("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def server_closed(sock: socket.socket) -> bool:
    """Whether the server has closed sock (checked without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(2.0)


def options(port: int, source: str, call_id: str, wait: float = 1.5) -> str | None:
    """The status line of an OPTIONS over a new connection from source, None if refused."""
    try:
        data, _ = tcp_exchange(port, sip_request(port, "OPTIONS", call_id), wait, source=source)
    except OSError:
        return None
    return status_line(data) if data else None


def assert_healthy(server: ServerProcess) -> None:
    reply = udp_exchange(server.port, sip_request(server.port, "OPTIONS", "alive")
                         .replace(b"SIP/2.0/TCP", b"SIP/2.0/UDP"), wait=3.0)
    assert reply is not None and status_line(reply) == "SIP/2.0 200 OK", server.log()[-3000:]
    assert "Traceback" not in server.log(), server.log()[-6000:]


def test_slowloris_is_cut_at_the_message_deadline_and_frees_the_slots(
    make_server: Callable[..., ServerProcess],
) -> None:
    """Bytes at 1/s used to refresh the idle clock: every slot held for good."""
    deadline = 2
    server = make_server(**{"server.tcp_max_connections": 6,
                            "server.tcp_max_connections_per_ip": 0,
                            "server.tcp_message_timeout": deadline})
    prefix = sip_request(server.port, "OPTIONS", "slow", end=False)
    attackers = [connect(server.port) for _ in range(6)]
    opened = time.monotonic()
    closed_after: dict[int, float] = {}
    admitted_after: float | None = None
    first_try = "not tried"
    try:
        for tick in range(10):  # 1 byte/s on every connection, 10 s at most
            for i, sock in enumerate(attackers):
                if i in closed_after:
                    continue
                if server_closed(sock):
                    closed_after[i] = time.monotonic() - opened
                    continue
                try:
                    sock.sendall(prefix[tick:tick + 1])
                except OSError:
                    closed_after[i] = time.monotonic() - opened
            if admitted_after is None:
                answer = options(server.port, SECOND_IP, f"newcomer-{tick}", wait=0.5)
                if tick == 0:
                    first_try = str(answer)
                if answer == "SIP/2.0 200 OK":
                    admitted_after = time.monotonic() - opened
            if len(closed_after) == len(attackers) and admitted_after is not None:
                break
            time.sleep(max(0.0, opened + tick + 1 - time.monotonic()))
    finally:
        for sock in attackers:
            sock.close()
    assert first_try == "None", "the slow connections really filled every slot"
    assert len(closed_after) == len(attackers), (closed_after, server.log()[-2000:])
    assert max(closed_after.values()) < deadline + 2.5, closed_after
    assert admitted_after is not None and admitted_after < deadline + 3.5
    wait_for(lambda: "no complete message within 2 s" in server.log())
    stats = server.cli("stats").stdout
    line = next(x for x in stats.splitlines() if "tcp:deadline_closed_connections" in x)
    assert int(line.split()[-1]) == len(attackers), stats
    assert_healthy(server)


def test_one_address_cannot_take_more_than_its_share_of_connections(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(**{"server.tcp_max_connections_per_ip": 4})
    held = [connect(server.port) for _ in range(4)]
    extra: list[socket.socket] = []
    try:
        time.sleep(0.3)
        extra = [connect(server.port) for _ in range(12)]
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not all(server_closed(s) for s in extra):
            time.sleep(0.1)
        assert all(server_closed(s) for s in extra), "over the per-IP cap: closed at once"
        assert not any(server_closed(s) for s in held), "those within it stay open"
        assert options(server.port, SECOND_IP, "other-ip") == "SIP/2.0 200 OK"
        # A connection within the cap works, and one a client registered
        # over no longer counts: its address may open another.
        held[0].sendall(sip_request(server.port, "REGISTER", "reg-1", extra=(
            "Contact: <sip:tester@127.0.0.1:5999;transport=tcp>", "Expires: 600")))
        answer, _ = read_reply(held[0], 3.0)
        assert status_line(answer) == "SIP/2.0 200 OK", answer
        assert options(server.port, "127.0.0.1", "after-register") == "SIP/2.0 200 OK"
        assert options(server.port, "127.0.0.1", "again") == "SIP/2.0 200 OK"
    finally:
        for sock in held + extra:
            sock.close()
    refusals = [ln for ln in server.log().splitlines() if "refus" in ln and "tcp" in ln]
    assert 1 <= len(refusals) <= 3, refusals  # logged in summary, not a line each
    stats = server.cli("stats").stdout
    line = next(x for x in stats.splitlines() if "tcp:refused_connections" in x)
    assert int(line.split()[-1]) == 12, stats  # but every one counted
    assert_healthy(server)


def test_an_endless_header_block_is_refused_before_it_is_all_read(
    make_server: Callable[..., ServerProcess],
) -> None:
    """A half-header under max_message_size used to be buffered whole, and kept."""
    cap = 4096
    server = make_server(**{"server.max_header_size": cap})
    answer = b""
    closed = False
    sent = 0
    with connect(server.port) as sock:
        head = sip_request(server.port, "MESSAGE", "endless", end=False) + b"X-Filler: "
        sock.sendall(head)
        sent = len(head)
        for _ in range(100):  # 100 KB at most, under max_message_size (128 KB)
            try:
                sock.sendall(b"a" * 1024)
            except OSError:
                closed = True
                break
            sent += 1024
            data, closed = read_reply(sock, 0.05)
            answer += data
            if closed:
                break
        if not closed:
            data, closed = read_reply(sock, 1.0)
            answer += data
    assert closed, f"still open after {sent} bytes of header"
    assert sent < cap + 16 * 1024, sent
    assert status_line(answer).startswith("SIP/2.0 513 "), answer
    # The same block sent whole, blank line included, gets the same answer.
    with connect(server.port) as sock:
        sock.sendall(sip_request(server.port, "OPTIONS", "whole",
                                 extra=("X-Filler: " + "b" * 2 * cap,)))
        data, _ = read_reply(sock, 2.0)
    assert status_line(data).startswith("SIP/2.0 513 "), data
    assert_healthy(server)

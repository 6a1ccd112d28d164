"""Issue 11, finding 9 (idempotent store): a MESSAGE already stored, the same
Call-ID, CSeq and From tag, is answered 202 again and not stored twice.

Before the fix a MESSAGE re-sent on the same TCP connection after its 202 (the
transaction is gone at once on a reliable transport, RFC 3261 Timer J = 0) was
stored a second time, and so was a client's retransmission reaching a server
restarted after a crash. The check lives in the database (a unique key), so
it holds across restarts and instances, on every backend.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from tests.integration.conftest import SiloBackend
from tests.integration.harness import ServerProcess
from tests.integration.silo_helpers import stats, wait_for
from tests.integration.sipwire import message, read_reply, status_line, udp_exchange

MakeServer = Callable[..., ServerProcess]


def test_tcp_resend_after_202_is_stored_once(
    make_server: MakeServer, silo_backend: SiloBackend
) -> None:
    server = make_server(**silo_backend.settings)
    data = message(server.port, "bob", b"only once", transport="TCP",
                   call_id="resend-1@client", branch="z9hG4bK-resend-1")
    answers = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(data)
            answers.append(status_line(read_reply(sock, 5)[0]))
        # The same Call-ID with the next CSeq is a new message: stored.
        sock.sendall(data.replace(b"CSeq: 1 MESSAGE", b"CSeq: 2 MESSAGE")
                     .replace(b"only once", b"and again"))
        answers.append(status_line(read_reply(sock, 5)[0]))
    assert answers == ["SIP/2.0 202 Accepted"] * 3
    rows = silo_backend.rows(server)
    assert [r[3] for r in rows] == [b"only once", b"and again"], rows
    counters = stats(server)
    assert (counters["msilo:stored_messages"], counters["msilo:duplicate_messages"]) == (2, 1)


def test_retransmission_after_crash_is_stored_once(
    make_server: MakeServer, silo_backend: SiloBackend
) -> None:
    server = make_server(**silo_backend.settings)
    data = message(server.port, "carol", b"before the crash",
                   call_id="crash-1@client", branch="z9hG4bK-crash-1")
    first = udp_exchange(server.port, data, wait=5)
    assert first is not None and status_line(first) == "SIP/2.0 202 Accepted"
    server.kill()  # SIGKILL: the 202 may never have reached the client
    server.start()
    # The client retransmits (Timer E) until the restarted server answers.
    again = wait_for(lambda: udp_exchange(server.port, data, wait=0.5), 15)
    assert again is not None and status_line(again) == "SIP/2.0 202 Accepted"
    # Another sender (another From tag) with the same Call-ID and CSeq is not
    # the same message.
    other = data.replace(b";tag=handmade", b";tag=someone-else")
    third = udp_exchange(server.port, other.replace(b"-crash-1\r\n", b"-crash-2\r\n"), wait=5)
    assert third is not None and status_line(third) == "SIP/2.0 202 Accepted"
    rows = silo_backend.rows(server)
    assert [r[3] for r in rows] == [b"before the crash"] * 2, rows
    assert "Traceback" not in server.log()

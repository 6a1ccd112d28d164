"""Issue 11, finding 4: storage limits are on by default.

Before the fix nothing bounded the silo: senders from other domains are never
challenged, ``max_messages`` was 0, and there was no per-sender or global cap,
so one source stored as fast as it could send (~74 MB/s), made-up recipients
included. Now an unauthenticated foreign source is rate limited (503 with
Retry-After), and the per-recipient (486), per-sender and global (507) caps
answer with a reason phrase naming the limit.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.integration.conftest import SiloBackend
from tests.integration.harness import ServerProcess
from tests.integration.silo_helpers import stats
from tests.integration.sipwire import header, message, status_line

MakeServer = Callable[..., ServerProcess]


class Sender:
    """MESSAGEs over one UDP socket, each a new request (own branch and Call-ID)."""

    def __init__(self, server: ServerProcess) -> None:
        self.port = server.port
        self.n = 0

    def request(self, user: str, from_uri: str, **kw: object) -> bytes:
        self.n += 1
        kw.setdefault("call_id", f"limit-{self.n}@client")
        return message(self.port, user, b"spam %d" % self.n, from_uri=from_uri,
                       branch=f"z9hG4bK-limit-{self.n}", **kw)

    def send(self, user: str, from_uri: str, **kw: object) -> bytes:
        return self.blast([self.request(user, from_uri, **kw)])[0]

    def blast(self, requests: list[bytes]) -> list[bytes]:
        """Send them all at once from one socket; the answers, in arrival order."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.settimeout(5)
            for data in requests:
                sock.sendto(data, ("127.0.0.1", self.port))
            return [sock.recv(65535) for _ in requests]


def test_foreign_flood_is_rate_limited_by_default(server: ServerProcess) -> None:
    sender = Sender(server)
    start = time.monotonic()
    answers = sender.blast([sender.request(f"made-up-{i}", "sip:mallory@evil.example")
                            for i in range(150)])
    elapsed = time.monotonic() - start
    codes = [status_line(a)[8:11] for a in answers]
    assert set(codes) == {"202", "503"}, codes
    refused = [a for a in answers if status_line(a).startswith("SIP/2.0 503")]
    assert len(refused) >= 150 - (100 + 20 * elapsed + 1), codes
    assert "rate" in status_line(refused[0]).lower()
    retry = header(refused[0], "Retry-After")
    assert retry is not None and 1 <= int(retry) <= 60
    # The default budget: a burst of 100, then 20 per second.
    assert len(server.rows()) == codes.count("202") <= 100 + 20 * elapsed + 1
    # Another source is not held back by this one's budget... and a local
    # sender is not a foreign one.
    local = sender.send("bob", f"sip:alice@127.0.0.1:{server.port}")
    assert status_line(local) == "SIP/2.0 202 Accepted"


def test_each_cap_answers_with_its_own_code_and_reason(
    make_server: MakeServer, silo_backend: SiloBackend
) -> None:
    server = make_server(**silo_backend.settings, **{
        "msilo.max_messages": 2, "msilo.max_sender_messages": 3, "msilo.max_rows": 5})
    s = Sender(server)
    host = f"127.0.0.1:{server.port}"
    a, b, c = (f"sip:{u}@{host}" for u in "abc")

    first = s.send("bob", a, call_id="keep@client")
    assert status_line(first) == "SIP/2.0 202 Accepted"
    assert status_line(s.send("bob", a)) == "SIP/2.0 202 Accepted"
    full_box = status_line(s.send("bob", b))
    assert full_box.startswith("SIP/2.0 486 ") and "mailbox full" in full_box, full_box

    # Made-up recipients do not dodge the sender's cap.
    assert status_line(s.send("made-up-1", a)) == "SIP/2.0 202 Accepted"
    sender_cap = status_line(s.send("made-up-2", a))
    assert sender_cap.startswith("SIP/2.0 507 ") and "sender" in sender_cap, sender_cap

    # Nor the global one: 5 rows in all.
    assert status_line(s.send("made-up-3", b)) == "SIP/2.0 202 Accepted"
    assert status_line(s.send("made-up-4", c)) == "SIP/2.0 202 Accepted"
    store_full = status_line(s.send("made-up-5", c))
    assert store_full.startswith("SIP/2.0 507 ") and "store full" in store_full, store_full
    assert len(silo_backend.rows(server)) == 5

    # A message already stored (same Call-ID, CSeq, From tag) is still
    # accepted when a cap is reached: the sender lost our 202 and asks again.
    again = s.send("bob", a, call_id="keep@client")
    assert status_line(again) == "SIP/2.0 202 Accepted"
    assert len(silo_backend.rows(server)) == 5
    assert stats(server)["msilo:refused_messages"] == 3
    assert "Traceback" not in server.log()

"""Issue "SIP core": a retransmitted request is one transaction, answered the same again.

Sent from a plain UDP socket: SIPp cannot send a retransmission on purpose
(it takes the identical answer for a retransmitted response and re-sends its
next message, forever).
"""

from __future__ import annotations

import socket

from tests.integration.harness import ServerProcess
from tests.integration.sipwire import header, request, status_line


def test_retransmitted_message_same_answer_stored_once(server: ServerProcess) -> None:
    message = request(server.port, method="MESSAGE", uri=f"sip:carol@127.0.0.1:{server.port}",
                      body=b"said twice", content_length=10, branch="z9hG4bK-twice-1")
    message = message.replace(b"\r\nCSeq:", b"\r\nContent-Type: text/plain\r\nCSeq:")
    answers = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        for _ in range(2):
            sock.sendto(message, ("127.0.0.1", server.port))
            answers.append(sock.recv(65535))
    first, again = answers
    assert status_line(first) == "SIP/2.0 202 Accepted"
    assert again == first, "a retransmission gets the very same response"
    assert header(first, "To") and ";tag=" in (header(first, "To") or "")
    rows = server.rows()
    assert len(rows) == 1, [dict(r) for r in rows]
    assert rows[0]["username"] == "carol" and bytes(rows[0]["body"]) == b"said twice"

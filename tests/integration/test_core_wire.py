"""Issue "SIP core": what a client sees on the wire for good, bad and broken input.

Each bad request is sent twice: raw from a SIPp scenario, and from a plain
socket. The server must answer 400/505 with a reason naming the problem (or
drop what cannot be answered) and keep serving: every test ends with an
OPTIONS that must still get 200.
"""

from __future__ import annotations

import pytest

from tests.integration.harness import ServerProcess, SippResult, run_sipp
from tests.integration.sipwire import header, request, status_line, tcp_exchange, udp_exchange

TRANSPORTS = ["udp", "tcp"]


def sipp_raw(server: ServerProcess, text: str, expect: int, transport: str) -> SippResult:
    result = run_sipp("uac_raw_request", server, transport=transport, timeout=5,
                      subst={"request": text, "expect": expect})
    assert isinstance(result, SippResult)
    return result


def assert_alive(server: ServerProcess, transport: str = "udp") -> None:
    result = run_sipp("uac_options", server, transport=transport, timeout=5,
                      keys={"ruser_at": "", "max_forwards": 70}, subst={"expect": 200})
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.stdout + server.log()[-2000:]


def raw_options(*, cseq: str = "1 OPTIONS", version: str = "SIP/2.0",
                content_length: str = "0", body: str = "") -> str:
    """An OPTIONS in SIPp syntax; the named parts can be made malformed."""
    lines = [
        f"OPTIONS sip:[remote_ip]:[remote_port] {version}",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        "Max-Forwards: 70",
        "From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]",
        "To: <sip:[remote_ip]:[remote_port]>",
        "Call-ID: [call_id]",
        f"CSeq: {cseq}",
    ]
    if content_length:
        lines.append(f"Content-Length: {content_length}")
    return "\n".join(lines) + "\n\n" + body


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_to_server_200_with_allow(server: ServerProcess, transport: str) -> None:
    result = run_sipp("uac_options", server, transport=transport, timeout=5,
                      keys={"ruser_at": "", "max_forwards": 70}, subst={"expect": 200})
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.stdout
    reply = result.received()[-1]
    assert status_line(reply) == "SIP/2.0 200 OK"
    allow = header(reply, "Allow") or ""
    assert {"OPTIONS", "MESSAGE", "REGISTER", "INVITE"} <= {m.strip() for m in allow.split(",")}
    assert (header(reply, "To") or "").find(";tag=") > 0


# (what is wrong, request text, expected status line) -- sent by SIPp
SIPP_MALFORMED = [
    ("bad-cseq", raw_options(cseq="4294967296 OPTIONS"), "SIP/2.0 400 Bad CSeq header"),
    ("cseq-method", raw_options(cseq="1 INVITE"),
     "SIP/2.0 400 CSeq method does not match request method"),
    ("bad-version", raw_options(version="SIP/3.0"), "SIP/2.0 505 Version Not Supported"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("name", "text", "expected"), SIPP_MALFORMED,
                         ids=[m[0] for m in SIPP_MALFORMED])
def test_malformed_request_from_sipp_answered_with_reason(
    server: ServerProcess, transport: str, name: str, text: str, expected: str
) -> None:
    status = int(expected.split()[1])
    result = sipp_raw(server, text, status, transport)
    assert result.returncode == 0, result.stdout + result.messages
    assert status_line(result.received()[-1]) == expected
    assert_alive(server, transport)


def test_content_length_beyond_body_on_udp_from_sipp(server: ServerProcess) -> None:
    text = raw_options(content_length="50", body="only a few bytes")
    result = sipp_raw(server, text, 400, "udp")
    assert result.returncode == 0, result.stdout + result.messages
    assert status_line(result.received()[-1]) == "SIP/2.0 400 Content-Length mismatch"
    assert_alive(server)


def test_missing_content_length_on_tcp_from_sipp(server: ServerProcess) -> None:
    result = sipp_raw(server, raw_options(content_length=""), 400, "tcp")
    assert result.returncode == 0, result.stdout + result.messages
    assert status_line(result.received()[-1]) == "SIP/2.0 400 Missing Content-Length header"
    assert_alive(server, "tcp")


# (what is wrong, request bytes for a server on port, expected status line) -- hand-made
def _socket_cases(port: int, transport: str) -> list[tuple[str, bytes, str]]:
    t = transport.upper()
    return [
        ("bad-cseq", request(port, transport=t, cseq="x OPTIONS", content_length=0),
         "SIP/2.0 400 Bad CSeq header"),
        ("bad-version", request(port, transport=t, version="SIP/1.0", content_length=0),
         "SIP/2.0 505 Version Not Supported"),
        ("max-forwards-0", request(port, transport=t, max_forwards=0, content_length=0),
         "SIP/2.0 483 Too Many Hops"),
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_malformed_requests_from_socket(server: ServerProcess, transport: str) -> None:
    for name, data, expected in _socket_cases(server.port, transport):
        if transport == "udp":
            reply = udp_exchange(server.port, data)
        else:
            reply, _ = tcp_exchange(server.port, data)
        assert reply, f"{name}: no answer"
        assert status_line(reply) == expected, name
        assert header(reply, "Call-ID") == "handmade-z9hG4bK-handmade-1@127.0.0.1", name
    assert_alive(server, transport)


def test_content_length_beyond_body_from_udp_socket(server: ServerProcess) -> None:
    data = request(server.port, method="MESSAGE", uri=f"sip:bob@127.0.0.1:{server.port}",
                   content_length=100, body=b"short")
    reply = udp_exchange(server.port, data)
    assert reply and status_line(reply) == "SIP/2.0 400 Content-Length mismatch"
    assert server.rows() == []
    assert_alive(server)


def test_missing_content_length_from_tcp_socket(server: ServerProcess) -> None:
    reply, closed = tcp_exchange(server.port, request(server.port, transport="TCP"),
                                 until_closed=True)
    assert status_line(reply) == "SIP/2.0 400 Missing Content-Length header"
    assert closed, "framing is lost: the server must close the connection"
    assert_alive(server, "tcp")


@pytest.mark.parametrize("junk", [
    b"\x00\xff\x13garbage that is not SIP at all\r\n\r\n",
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;bra",
    b"\r\n\r\n",
], ids=["garbage", "truncated", "keepalive"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_garbage_is_dropped_and_server_survives(
    server: ServerProcess, transport: str, junk: bytes
) -> None:
    if transport == "udp":
        assert udp_exchange(server.port, junk, wait=0.3) is None
    else:
        reply, _ = tcp_exchange(server.port, junk, wait=0.3)
        assert reply.strip(b"\r\n") == b"", "no SIP answer (a CRLF pong is allowed)"
    assert_alive(server, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_max_forwards_zero_gets_483(server: ServerProcess, transport: str) -> None:
    result = run_sipp("uac_options", server, transport=transport, timeout=5,
                      keys={"ruser_at": "", "max_forwards": 0}, subst={"expect": 483})
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.stdout
    assert status_line(result.received()[-1]) == "SIP/2.0 483 Too Many Hops"

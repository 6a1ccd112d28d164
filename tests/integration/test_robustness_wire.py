"""Hostile input found by fuzzing a real server, one test per defect.

Every test sends the bad input over the wire, checks the answer (a clear SIP
error, or nothing when nothing can be answered), and ends like the fuzzer:
no traceback in the server log and the server still answers OPTIONS.
"""

from __future__ import annotations

import socket
import zlib

import pytest

from tests.integration.harness import ServerProcess
from tests.integration.silo_helpers import wait_for
from tests.integration.sipwire import status_line, tcp_exchange, udp_exchange

TRANSPORTS = ["udp", "tcp"]


def raw(port: int, method: str, uri: str, *, transport: str = "UDP", extra: str = "",
        body: bytes = b"", via: str | None = None, call_id: str = "robust-1",
        from_: str = "<sip:alice@127.0.0.1>;tag=r1", branch: str = "") -> bytes:
    """A request whose every interesting part can be made hostile (str or bytes)."""
    branch = branch or f"z9hG4bK-{zlib.crc32(call_id.encode('utf-8', 'surrogateescape'))}"
    via = via or f"SIP/2.0/{transport} 127.0.0.1:5999;rport;branch={branch}"
    lines = [f"{method} {uri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70",
             f"From: {from_}", f"To: <{uri}>", f"Call-ID: {call_id}", f"CSeq: 1 {method}"]
    lines += [ln for ln in extra.split("\n") if ln]
    if body:
        lines.append("Content-Type: text/plain")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def exchange(server: ServerProcess, data: bytes, transport: str, wait: float = 2.0) -> bytes:
    if transport == "udp":
        return udp_exchange(server.port, data, wait) or b""
    return tcp_exchange(server.port, data.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"), wait)[0]


def assert_healthy(server: ServerProcess) -> None:
    """No traceback logged, and a fresh OPTIONS is still answered 200."""
    options = raw(server.port, "OPTIONS", f"sip:{server.uri_host}", call_id="alive-check")
    reply = udp_exchange(server.port, options, wait=3.0)
    assert reply is not None and status_line(reply) == "SIP/2.0 200 OK", server.log()[-3000:]
    assert "Traceback" not in server.log(), server.log()[-6000:]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_non_utf8_header_bytes_get_400(server: ServerProcess, transport: str) -> None:
    # Once decoded with surrogateescape, these bytes made the registrar's To
    # tag hash and the silo's INSERT raise UnicodeEncodeError (500 + traceback).
    uri = f"sip:{server.uri_host}"
    register = raw(server.port, "REGISTER", uri, call_id="reg-\udcff",
                   extra="Contact: <sip:bob@127.0.0.1:5999>")
    message = raw(server.port, "MESSAGE", f"sip:nobody@{server.uri_host}", body=b"hi",
                  call_id=f"msg-{transport}", from_='"Al\udcb1ce" <sip:alice@127.0.0.1>;tag=r1')
    for data in (register, message):
        reply = exchange(server, data, transport)
        assert status_line(reply) == "SIP/2.0 400 Invalid UTF-8 in headers", reply
    assert server.rows() == []
    assert_healthy(server)


@pytest.mark.parametrize(
    "params",
    [
        "rport=junk",  # int('junk') raised while sending the answer: no answer at all
        "rport=99999999999",
        "rport;received=nowhere.invalid",  # a name: the UDP socket raised ValueError
        "rport=1;received=127.0.0.1",  # answer sent to port 1, not back to the sender
    ],
)
def test_sender_written_received_and_rport_are_replaced(server: ServerProcess,
                                                         params: str) -> None:
    via = f"SIP/2.0/UDP 127.0.0.1:5999;{params};branch=z9hG4bK-rp{len(params)}"
    data = raw(server.port, "OPTIONS", f"sip:{server.uri_host}", via=via,
               call_id=f"rport-{len(params)}")
    reply = udp_exchange(server.port, data, wait=2.0)
    assert reply is not None and status_line(reply) == "SIP/2.0 200 OK", server.log()[-2000:]
    assert_healthy(server)


@pytest.mark.parametrize("next_hop", ["1.2.-1.4:5060", "127.0.0.1:0", "localhost:5060",
                                      "127.0.0.1;rport=99999999999"])
def test_stray_response_to_unusable_via_is_dropped(server: ServerProcess, next_hop: str) -> None:
    # A response no transaction wants is forwarded to its second Via; a
    # destination the UDP socket refuses raised ValueError/OverflowError.
    response = (
        f"SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP {server.uri_host};branch=z9hG4bK-ours\r\n"
        f"Via: SIP/2.0/UDP {next_hop};branch=z9hG4bK-theirs\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:bob@127.0.0.1>;tag=b\r\n"
        "Call-ID: stray-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    assert udp_exchange(server.port, response, wait=0.5) is None
    assert_healthy(server)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_contact_host_the_idna_codec_refuses_is_unreachable_not_a_crash(
        server: ServerProcess, transport: str) -> None:
    # A label over 63 characters: getaddrinfo raised UnicodeError, not OSError,
    # so relaying to such a contact died with a traceback and a bare 500.
    aor = f"sip:idna{transport}@{server.uri_host}"
    contact = f"<sip:idna@{'a' * 64}.example>"
    reply = exchange(server, raw(server.port, "REGISTER", aor, call_id=f"idna-reg-{transport}",
                                 extra=f"Contact: {contact}"), transport)
    assert status_line(reply) == "SIP/2.0 200 OK", reply
    reply = exchange(server, raw(server.port, "MESSAGE", aor, call_id=f"idna-{transport}",
                                 body=b"hi"), transport, wait=3.0)
    # Unreachable binding: the failure route stores the MESSAGE.
    assert status_line(reply) == "SIP/2.0 202 Accepted", reply
    assert_healthy(server)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stray_ack_with_bad_route_is_dropped(server: ServerProcess, transport: str) -> None:
    # An ACK matching no transaction is relayed statelessly; its Route was
    # first parsed there, and a bad one escaped as a ParseError traceback.
    data = raw(server.port, "ACK", f"sip:bob@{server.uri_host}", call_id=f"ack-{transport}",
               extra="Route: <sip:%zz@127.0.0.1;lr>")
    assert exchange(server, data, transport, wait=0.5) == b""
    wait_for(lambda: "ACK from" in server.log()
             and "dropped: Bad URI in Route header" in server.log())
    assert_healthy(server)


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE"])
def test_contacts_pointing_at_the_server_get_482_not_a_forking_storm(
        server: ServerProcess, method: str) -> None:
    # Two contacts that are the server itself: each relay re-entered the route
    # and serial forking retried the other contact after every 483 at depth 70,
    # 2**70 requests from one INVITE (100% CPU, RSS +30 MB/s, never ending).
    aor = f"sip:loop@{server.uri_host}"
    contacts = ", ".join(f"<sip:loop@{server.uri_host};x={i}>" for i in range(2))
    reply = udp_exchange(server.port, raw(server.port, "REGISTER", aor, call_id="loop-reg",
                                          extra=f"Contact: {contacts}"), wait=2.0)
    assert reply is not None
    if status_line(reply) == "SIP/2.0 403 Contact points to this server":
        assert_healthy(server)  # refused at the registrar: no binding, no storm
        return
    assert status_line(reply) == "SIP/2.0 200 OK"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        me = f"127.0.0.1:{sock.getsockname()[1]}"
        data = raw(server.port, method, aor, body=b"x", call_id=f"loop-{method}",
                   via=f"SIP/2.0/UDP {me};rport;branch=z9hG4bK-loop{method}")
        sock.sendto(data, ("127.0.0.1", server.port))
        finals = []
        while not finals:
            answer = status_line(sock.recv(65535))  # TimeoutError fails the test
            if not answer.startswith("SIP/2.0 1"):
                finals.append(answer)
    assert finals == ["SIP/2.0 482 Loop Detected"]
    # both contacts, once each
    wait_for(lambda: server.log().count(f"not relaying {method}") == 2)
    assert_healthy(server)


def test_tcp_connection_reset_right_after_connect_is_ignored(server: ServerProcess) -> None:
    # connect, send a request and RST at once (SO_LINGER 0): the server's
    # connection_made found no peer name and raised in the event loop, once
    # per connection, leaving the accepted socket open.
    linger_rst = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
    for i in range(30):
        with socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)
            sock.sendall(raw(server.port, "MESSAGE", f"sip:rst{i}@{server.uri_host}",
                             transport="TCP", call_id=f"rst-{i}", body=b"x"))
    assert_healthy(server)

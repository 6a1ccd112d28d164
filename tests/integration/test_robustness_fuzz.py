"""Seeded mutation fuzzing of a real server over UDP and TCP, kept small.

A few hundred mutations of valid requests and responses (bytes flipped,
inserted or deleted, headers duplicated, dropped or replaced by hostile
ones, numbers swapped for boundary values, long runs of filler) are sent
with a fixed seed, so a failure reproduces. The server may answer or drop
each one, but must never log a traceback and must keep answering OPTIONS.
Every loop is bounded in count and the whole run in time.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import time

import pytest

from tests.integration.harness import ServerProcess
from tests.integration.sipwire import status_line, udp_exchange

SEED = 20240611
MUTATIONS = 400
TCP_SHARE = 0.25  # this fraction goes over a fresh TCP connection each
DEADLINE_S = 40.0

NUMBERS = [b"0", b"-1", b"65536", b"2147483648", b"4294967296", b"99999999999999999999"]
TOKENS = [b"\x00", b"\xff\xfe", b"<", b">", b";", b"=", b'"', b"[", b"]", b"@", b":", b"%",
          b"%00", b"\r\n", b"\n", b" ", b"\t", b",", b"*", b"tel:", b"mailto:x@y", b";lr",
          b";maddr=[::1]", b";rport=abc", b";received=zz", b";expires=-1", b";q=9", b"[::1]",
          b"\r\n\r\n", b";branch=", b"A" * 3000]
HOSTILE_HEADERS = [
    b"Expires: 4294967296", b"Expires: -1", b"Max-Forwards: 0", b"Max-Forwards: 99999999999",
    b"Contact: <sip:x@127.0.0.1:1>;expires=-1", b"Contact: *", b"Contact: garbage",
    b"Contact: <sip:x@[::1]:5060>", b"Contact: <tel:+123>", b"Route: <sip:127.0.0.1;lr>",
    b"Route: garbage", b"Via: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKq;maddr=1.2.3.4",
    b"Via: SIP/2.0/TCP 127.0.0.1;rport=junk", b"Content-Type: text/", b"Content-Encoding: ,,,",
    b"Date: Thu, 01 Jan 9999 00:00:00 GMT", b"Proxy-Require: bar", b"Authorization: Digest x",
    b'Proxy-Authorization: Digest username="a", realm="b", nonce="c", uri="d", response="e"',
    b"CSeq: 2147483648 MESSAGE", b"Call-ID: ", b"l: 5", b"Content-Length: 99999999",
    b'From: "\xff\xfe" <sip:a@b>;tag=1', b"m: <sip:a@b>",
]


def seeds(port: int) -> list[bytes]:
    """Valid messages of every kind the server handles, to mutate."""
    host = f"127.0.0.1:{port}"

    def req(method: str, uri: str, extra: str = "", body: bytes = b"") -> bytes:
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK{method}{len(extra)}",
                 "Max-Forwards: 70", "From: <sip:alice@127.0.0.1>;tag=fz", f"To: <{uri}>",
                 f"Call-ID: fuzz-{method}-{len(extra)}", f"CSeq: 1 {method}"]
        lines += [ln for ln in extra.split("\n") if ln]
        if body:
            lines.append("Content-Type: text/plain")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    response = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {host};branch=z9hG4bKnone\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKup\r\n"
                "From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=2\r\nCall-ID: fz\r\n"
                "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()
    return [
        req("OPTIONS", f"sip:{host}"),
        req("REGISTER", f"sip:bob@{host}", "Contact: <sip:bob@127.0.0.1:5999>;expires=60"),
        req("MESSAGE", f"sip:bob@{host}", body=b"hello"),
        req("MESSAGE", f"sip:carol@{host}", "Expires: 30\nContent-Encoding: gzip", b"hi"),
        req("INVITE", f"sip:bob@{host}", "Contact: <sip:alice@127.0.0.1:5999>", b"v=0\r\n"),
        req("CANCEL", f"sip:bob@{host}"),
        req("ACK", f"sip:bob@{host}", f"Route: <sip:{host};lr>"),
        req("BYE", f"sip:bob@{host}", f"Route: <sip:{host};lr>"),
        req("MESSAGE", f"tel:+1234;phone-context={host}", body=b"x"),
        response,
        response.replace(b"200 OK", b"180 Ringing"),
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            buf = bytearray(b"X")
        i = rng.randrange(len(buf))
        op = rng.randrange(8)
        if op == 0:
            buf[i] = rng.randrange(256)
        elif op == 1:
            del buf[i : i + rng.randint(1, 10)]
        elif op == 2:
            buf[i:i] = rng.choice(TOKENS)
        elif op == 3:
            numbers = list(re.finditer(rb"\d+", bytes(buf)))
            if numbers:
                m = rng.choice(numbers)
                buf[m.start() : m.end()] = rng.choice(NUMBERS)
        else:  # header-level: duplicate, drop or add a hostile one
            lines = bytes(buf).split(b"\r\n")
            end = lines.index(b"") if b"" in lines else len(lines)
            if end > 1:
                j = rng.randrange(1, end)
                if op == 4:
                    lines.insert(j, lines[j])
                elif op == 5:
                    del lines[j]
                else:
                    lines.insert(j, rng.choice(HOSTILE_HEADERS))
            buf = bytearray(b"\r\n".join(lines))
    return bytes(buf[:60000])  # stays one datagram


def send_tcp(port: int, data: bytes) -> None:
    # No answer, a reset or a close are all valid outcomes for a broken message.
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                 timeout=0.5) as sock:
        sock.sendall(data.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        sock.settimeout(0.02)
        sock.recv(65535)


def answers_options(server: ServerProcess) -> bool:
    options = (f"OPTIONS sip:{server.uri_host} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK{time.monotonic_ns()}\r\n"
               "Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\n"
               f"To: <sip:{server.uri_host}>\r\nCall-ID: alive-{time.monotonic_ns()}\r\n"
               "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    reply = udp_exchange(server.port, options, wait=3.0)
    return reply is not None and status_line(reply) == "SIP/2.0 200 OK"


@pytest.mark.timeout(120)
def test_seeded_mutations_leave_no_traceback_and_server_answers(server: ServerProcess) -> None:
    rng = random.Random(SEED)
    corpus = seeds(server.port)
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        for n in range(MUTATIONS):
            assert time.monotonic() - started < DEADLINE_S, f"only {n} mutations in time"
            data = mutate(rng, rng.choice(corpus))
            if rng.random() < TCP_SHARE:
                send_tcp(server.port, data)
            else:
                udp.sendto(data, ("127.0.0.1", server.port))
                time.sleep(0.001)  # a burst, but not one the kernel must drop
            if n % 100 == 99:
                assert answers_options(server), f"no answer after {n + 1}: {server.log()[-3000:]}"
    assert answers_options(server)
    log = server.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:6000]

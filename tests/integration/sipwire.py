"""Hand-made SIP over plain sockets, and reading SIP text, for the integration tests."""

from __future__ import annotations

import socket
import time
from typing import Any


def udp_exchange(port: int, data: bytes, wait: float = 1.0) -> bytes | None:
    """Send one datagram to the server; the first datagram back, or None after wait."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(wait)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def tcp_exchange(
    port: int, data: bytes, wait: float = 1.0, until_closed: bool = False,
    source: str | None = None,
) -> tuple[bytes, bool]:
    """Send data over a new connection (from source, an address of this host, when
    given); (what was read, whether the server closed it), as read_reply reads."""
    address = None if source is None else (source, 0)
    with socket.create_connection(("127.0.0.1", port), timeout=wait,
                                  source_address=address) as sock:
        sock.sendall(data)
        return read_reply(sock, wait, until_closed)


def read_reply(sock: socket.socket, wait: float, until_closed: bool = False) -> tuple[bytes, bool]:
    """(what was read, whether the server closed or reset sock).

    Reads until a complete bodiless response, or with until_closed until the
    server closes the connection; never longer than wait.
    """
    received = b""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65535)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
        complete = b"\r\n\r\n" in received and b"Content-Length: 0\r\n" in received
        if complete and not until_closed:
            return received, False
    return received, False


def status_line(message: str | bytes) -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    return text.split("\r\n", 1)[0].split("\n", 1)[0].strip()


def header(message: str | bytes, name: str) -> str | None:
    """First value of header name (case-insensitive, full names only)."""
    values = headers(message, name)
    return values[0] if values else None


def headers(message: str | bytes, name: str) -> list[str]:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    head = text.replace("\r\n", "\n").split("\n\n", 1)[0]
    out = []
    for line in head.split("\n")[1:]:
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() == name.lower():
            out.append(value.strip())
    return out


def answer(message: str | bytes, status: int = 200, reason: str = "OK") -> bytes:
    """The final response a UAS sends to a request it got (Vias, From, Call-ID, CSeq
    copied, a To tag added): a test target answers what the server relays to it, so
    that no transaction is left waiting for fr_timer when the server stops."""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {via}" for via in headers(message, "Via")]
    lines += [f"From: {header(message, 'From')}", f"To: {header(message, 'To')};tag=testuas",
              f"Call-ID: {header(message, 'Call-ID')}", f"CSeq: {header(message, 'CSeq')}",
              "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def request(
    port: int,
    *,
    method: str = "OPTIONS",
    uri: str | None = None,
    transport: str = "UDP",
    local_port: int = 5999,
    cseq: str | None = None,
    version: str = "SIP/2.0",
    max_forwards: int = 70,
    body: bytes = b"",
    content_length: int | None = None,
    branch: str = "z9hG4bK-handmade-1",
    from_uri: str | None = None,
    from_tag: str = "handmade",
    call_id: str | None = None,
    extra: tuple[str, ...] = (),
) -> bytes:
    """A request as bytes, every field overridable to make it malformed.

    *extra*: more header lines (e.g. ``"Content-Type: text/plain"``), put
    before Content-Length."""
    uri = uri or f"sip:127.0.0.1:{port}"
    lines = [
        f"{method} {uri} {version}",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};rport;branch={branch}",
        f"Max-Forwards: {max_forwards}",
        f"From: <{from_uri or f'sip:tester@127.0.0.1:{local_port}'}>;tag={from_tag}",
        f"To: <{uri}>",
        f"Call-ID: {call_id if call_id is not None else f'handmade-{branch}@127.0.0.1'}",
        f"CSeq: {cseq if cseq is not None else '1 ' + method}",
        *extra,
    ]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def traced(trace: str, direction: str = "received") -> list[str]:
    """The messages a SIPp -trace_msg log shows as received (or "sent"), bodies kept."""
    out = []
    for block in trace.split("-----------------------------------------------")[1:]:
        lines = block.split("\n", 2)
        if len(lines) == 3 and f"message {direction}" in lines[1]:
            out.append(lines[2].lstrip("\n").rstrip("\n"))
    return out


class RawUA:
    """A UDP user agent on a raw socket that says exactly what a test (or an
    attacker) wants: requests built line by line, answers read as text."""

    def __init__(self, server_port: int, host: str = "127.0.0.1", wait: float = 3.0) -> None:
        self.server = ("127.0.0.1", server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(wait)
        self.host, self.port = self.sock.getsockname()[:2]
        self._branch = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawUA:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_request(self, start: str, lines: list[str], body: str = "") -> str:
        """Send a request with our Via on top; the branch it used."""
        self._branch += 1
        branch = f"z9hG4bK-raw{self.port}x{self._branch}x{time.time_ns()}"
        head = [start, f"Via: SIP/2.0/UDP {self.host}:{self.port};rport;branch={branch}",
                "Max-Forwards: 70", *lines, f"Content-Length: {len(body.encode())}"]
        self.sock.sendto(("\r\n".join(head) + "\r\n\r\n" + body).encode(), self.server)
        return branch

    def recv(self, wait: float | None = None) -> tuple[str, tuple[str, int]] | None:
        """The next datagram and where it came from; None when none came in time."""
        if wait is not None:
            self.sock.settimeout(wait)
        try:
            data, addr = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        return data.decode(errors="replace"), addr[:2]

    def final(self, wait: float = 3.0) -> str:
        """The next final response (provisionals skipped); fails when none comes."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            got = self.recv(max(deadline - time.monotonic(), 0.01))
            if got is not None and got[0].startswith("SIP/2.0 ") and \
                    not got[0].startswith("SIP/2.0 1"):
                return got[0]
        raise AssertionError("no final response")

    def reply(self, request: str, addr: tuple[str, int], status: str,
              extra: list[str] | None = None, to_tag: str | None = None) -> None:
        reply_to(self.sock, request, addr, status, extra, to_tag)


def reply_to(sock: socket.socket, request: str, addr: tuple[str, int], status: str,
             extra: list[str] | None = None, to_tag: str | None = None) -> None:
    """Answer request on sock (Vias, Record-Route, From, To, Call-ID, CSeq copied)."""
    lines = [f"SIP/2.0 {status}"]
    for name in ("Via", "Record-Route", "From", "To", "Call-ID", "CSeq"):
        for value in headers(request, name):
            if name == "To" and to_tag and ";tag=" not in value:
                value += f";tag={to_tag}"
            lines.append(f"{name}: {value}")
    lines += [*(extra or []), "Content-Length: 0"]
    sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)
def message(port: int, user: str, body: bytes = b"hello", *, uri: str | None = None,
            extra: tuple[str, ...] = (), **kw: Any) -> bytes:
    """A MESSAGE to *user* at the server, text/plain, Content-Length right;
    every other field as in request() (from_uri, call_id, branch...)."""
    return request(port, method="MESSAGE", uri=uri or f"sip:{user}@127.0.0.1:{port}",
                   body=body, content_length=len(body),
                   extra=("Content-Type: text/plain", *extra), **kw)

"""Hand-made SIP over plain sockets, and reading SIP text, for the integration tests."""

from __future__ import annotations

import socket
import time


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
    port: int, data: bytes, wait: float = 1.0, until_closed: bool = False
) -> tuple[bytes, bool]:
    """Send data over a new connection; (what was read, whether the server closed it).

    Reads until a complete bodiless response, or with until_closed until the
    server closes the connection; never longer than wait.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65535)
            except TimeoutError:
                return received, False
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
) -> bytes:
    """A request as bytes, every field overridable to make it malformed."""
    uri = uri or f"sip:127.0.0.1:{port}"
    lines = [
        f"{method} {uri} {version}",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};rport;branch={branch}",
        f"Max-Forwards: {max_forwards}",
        f"From: <sip:tester@127.0.0.1:{local_port}>;tag=handmade",
        f"To: <{uri}>",
        f"Call-ID: handmade-{branch}@127.0.0.1",
        f"CSeq: {cseq if cseq is not None else '1 ' + method}",
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

"""UDP listener: one datagram is one SIP message."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from sipsilo.flow import Flow
from sipsilo.sip.uri import format_host

log = logging.getLogger(__name__)

Receiver = Callable[[bytes, Flow], None]

# A burst of a few thousand MESSAGEs must not be dropped by the kernel while
# the event loop is busy committing a batch: ask for a large receive buffer.
RCVBUF_BYTES = 8 * 1024 * 1024


# The largest UDP payload (65,535 minus the IP and UDP headers); IPv6 allows
# 20 bytes more, but a message that needs them goes nowhere over IPv4.
MAX_DATAGRAM = 65507


class DatagramTooLarge(ConnectionError):
    """The message does not fit one UDP datagram: it can never be sent this way
    (unlike a passing network failure), so the stack answers 513, not 503."""


def check_size(data: bytes) -> None:
    if len(data) > MAX_DATAGRAM:
        raise DatagramTooLarge(
            f"{len(data)} bytes do not fit a UDP datagram (at most {MAX_DATAGRAM})")


def bind_udp(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket with large buffers (a listener's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    # No SO_REUSEADDR: UDP has no TIME_WAIT to skip, and on Linux it would let a
    # second server bind the same port silently and take the first one's traffic.
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        # A kernel that caps the size gives less, which is fine.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF_BYTES)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError("udp", host, port, exc) from None
    sock.setblocking(False)
    return sock


class ListenError(Exception):
    """A listen address that cannot be bound: says which, why, and what to change."""

    def __init__(self, proto: str, host: str, port: int, exc: OSError) -> None:
        self.proto, self.host, self.port = proto, host, port
        addr = f"{proto}:{format_host(host)}:{port}"
        other = f"{proto}:{format_host(host)}:{port + 10 if port < 65526 else port - 10}"
        # asyncio words it "error while attempting to bind on address ...": the errno's
        # own text is what a user recognises.
        reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
        if exc.errno == errno.EADDRINUSE:
            hint = (f"another server (another sipsilo?) is using it; stop that one, or give "
                    f"server.listen another port (e.g. \"{other}\")")
        elif exc.errno == errno.EACCES:
            hint = "ports below 1024 need root (or CAP_NET_BIND_SERVICE); pick a port >= 1024"
        elif exc.errno == errno.EADDRNOTAVAIL:
            hint = "that is not an address of this machine; fix server.listen"
        else:
            hint = "check server.listen"
        super().__init__(f"cannot listen on {addr}: {reason}: {hint}")


class UdpListener(asyncio.DatagramProtocol):
    def __init__(self, host: str, port: int, receiver: Receiver) -> None:
        self.host = host
        self.port = port
        self._receiver = receiver
        self._transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = (host, port)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = bind_udp(self.host, self.port)
        await loop.create_datagram_endpoint(lambda: self, sock=sock)
        bound = sock.getsockname()
        self.local = (self.host, bound[1])
        self.port = bound[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        host, port = str(addr[0]), int(addr[1])
        if not data.strip(b"\r\n\0 "):
            return  # NAT keep-alive (RFC 5626 §3.5.1 CRLF, or empty)
        try:
            self._receiver(data, Flow("udp", self.local, (host, port)))
        except Exception:  # the server never dies on input
            log.exception("error handling datagram from %s:%s", host, port)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction timers handle loss.
        log.debug("udp error on %s:%s: %s", self.host, self.port, exc)

    def send(self, data: bytes, remote: tuple[str, int]) -> None:
        check_size(data)  # uvloop would only report it to error_received, later
        try:
            self._sendto(data, remote)
        except (ValueError, OverflowError, TypeError, socket.gaierror) as exc:
            # A destination taken from a Via or URI that is not a numeric
            # address (a name, "1.2.-1.4", a port beyond 65535): callers
            # handle ConnectionError, not the socket layer's whole zoo.
            raise ConnectionError(f"cannot send to {remote[0]}:{remote[1]}: {exc}") from exc

    def _sendto(self, data: bytes, remote: tuple[str, int]) -> None:
        if self._transport is None:
            raise ConnectionError("UDP listener is not running")
        self._transport.sendto(data, remote)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

"""Where a message came from or goes to, independent of sockets.

A Flow names the path a message travelled: which transport, our local address,
the peer's address and, for stream transports, which connection. Responses go
back along the request's flow (RFC 3261 §18.2.2) and the registrar remembers
the flow a REGISTER came on, so that a client behind NAT or on TCP can be
reached over that same path later.

This module sits below the transports, the stack and the domain packages:
the registrar stores the Flow of a binding and the silo sends to a Target,
and neither may import the transports that carry them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipsilo.sip.uri import format_host

if TYPE_CHECKING:
    from sipsilo.sip.message import Request

STREAMS = frozenset({"tcp", "tls", "ws", "wss"})
# Reached only over the connection the client opened: we never open a WebSocket.
CLIENT_OPENED = frozenset({"ws", "wss"})


@dataclass(frozen=True, slots=True)
class Flow:
    transport: str  # "udp", "tcp", "tls", "ws" or "wss" (lower-case)
    local: tuple[str, int]
    remote: tuple[str, int]
    conn_id: int | None = None  # stream connection the message came on
    # Who holds that connection, when that is another process than the one
    # reading this value: the SIP URI of the holder's private listener
    # (sipsilo.routing.handover). Set on the flows bindings keep in a server of
    # several workers; None: this process.
    owner: str | None = None

    @property
    def reliable(self) -> bool:
        # Reliable transports never retransmit at the transaction layer (§17).
        return self.transport != "udp"

    def __str__(self) -> str:
        return f"{self.transport}:{_hostport(self.remote)}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send a new request: a transport and a numeric address."""

    transport: str
    host: str
    port: int
    conn_id: int | None = None  # reuse this connection when it is still open
    # Send from this listener (host, port) when it exists: the one a binding
    # registered on, so a UA behind NAT sees the address it opened a pinhole to.
    local: tuple[str, int] | None = None
    # TLS: the name to ask for (SNI) and verify in the peer's certificate, the
    # URI's host before it was resolved to host.
    server_name: str | None = None
    # A Route entry put on top of the request before it leaves: the process
    # that holds the connection to the destination (routing.handover), in the
    # spirit of a Path entry (RFC 3327). A function is given the request as it
    # leaves (our Via on top) and makes the entry for that request alone (a
    # hand-over's signature covers it: it cannot be put on another).
    route: str | Callable[[Request], str] | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        return f"{self.transport}:{_hostport((self.host, self.port))}"


def _hostport(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"{format_host(host)}:{port}"

"""All listening sockets of the server behind one small interface.

The stack above only says "send these bytes back along this flow" or "send
these bytes to this target"; which socket or connection that takes is decided
here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sipsilo.sip.errors import ParseError
from sipsilo.transport.flow import Flow, Target
from sipsilo.transport.tcp import TcpListener, TcpRegistry
from sipsilo.transport.udp import UdpListener

log = logging.getLogger(__name__)

Receiver = Callable[[bytes, Flow], None]


@dataclass(frozen=True)
class ListenSpec:
    proto: str  # "udp" | "tcp"
    host: str
    port: int


def _family(host: str) -> int:
    return 6 if ":" in host else 4


class Transports:
    def __init__(
        self,
        specs: Iterable[ListenSpec],
        receiver: Receiver,
        on_framing_error: Callable[[bytes, Flow, ParseError], None],
        max_message_size: int = 65535,
    ) -> None:
        self._specs = list(specs)
        self._receiver = receiver
        self.tcp = TcpRegistry(receiver, on_framing_error, max_message_size)
        self.udp: list[UdpListener] = []
        self.tcp_listeners: list[TcpListener] = []

    async def start(self) -> None:
        for spec in self._specs:
            if spec.proto == "udp":
                udp = UdpListener(spec.host, spec.port, self._receiver)
                await udp.start()
                self.udp.append(udp)
            elif spec.proto == "tcp":
                tcp = TcpListener(spec.host, spec.port, self.tcp)
                await tcp.start()
                self.tcp_listeners.append(tcp)
            else:
                raise ValueError(f"unsupported transport {spec.proto!r}")

    def close(self) -> None:
        for udp in self.udp:
            udp.close()
        for tcp in self.tcp_listeners:
            tcp.close()
        self.tcp.close_all()

    def bound(self) -> list[tuple[str, str, int]]:
        """(proto, host, port) of every listener, with real ports after start."""
        return [("udp", u.host, u.port) for u in self.udp] + [
            ("tcp", t.host, t.port) for t in self.tcp_listeners
        ]

    def supports(self, transport: str) -> bool:
        return any(proto == transport for proto, _, _ in self.bound())

    def local_address(self, transport: str, remote_host: str) -> tuple[str, int]:
        """The address we put in Via/Contact for a message to remote_host."""
        fam = _family(remote_host)
        candidates = [(h, p) for proto, h, p in self.bound() if proto == transport]
        if not candidates:
            candidates = [(h, p) for _, h, p in self.bound()]
        for host, port in candidates:
            if _family(host) == fam:
                return host, port
        return candidates[0]

    def _udp_for(self, remote_host: str) -> UdpListener:
        fam = _family(remote_host)
        for udp in self.udp:
            if _family(udp.host) == fam:
                return udp
        if not self.udp:
            raise ConnectionError("no UDP listener configured")
        raise ConnectionError(f"no UDP listener for IPv{fam} destination {remote_host}")

    def send_on_flow(self, data: bytes, flow: Flow) -> None:
        """Send back along an existing flow (responses). Raises ConnectionError."""
        if flow.transport == "udp":
            self._udp_for(flow.remote[0]).send(data, flow.remote)
            return
        conn = self.tcp.get(flow.conn_id) or self.tcp.by_remote(flow.remote)
        if conn is None:
            raise ConnectionError(f"connection to {flow} is closed")
        conn.send(data)

    def send_datagram(self, data: bytes, target: Target) -> Flow:
        """Send to a UDP target now (nothing to wait for). Raises ConnectionError."""
        udp = self._udp_for(target.host)
        udp.send(data, (target.host, target.port))
        return Flow("udp", udp.local, (target.host, target.port))

    async def send(self, data: bytes, target: Target) -> Flow:
        """Send to a target, opening a TCP connection when none is open."""
        if target.transport == "udp":
            return self.send_datagram(data, target)
        if target.transport != "tcp":
            raise ConnectionError(f"transport {target.transport} is not supported")
        conn = self.tcp.get(target.conn_id)
        if conn is None:
            conn = await self.tcp.connect(target.host, target.port)
        conn.send(data)
        return conn.flow

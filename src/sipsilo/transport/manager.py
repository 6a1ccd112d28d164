"""All listening sockets of the server behind one small interface.

The stack above only says "send these bytes back along this flow" or "send
these bytes to this target"; which socket or connection that takes is decided
here.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from sipsilo.flow import CLIENT_OPENED, STREAMS, Flow, Target
from sipsilo.sip.errors import ParseError
from sipsilo.sip.uri import canonical_host, is_ip_address
from sipsilo.transport.layer import Layer
from sipsilo.transport.stream import StreamLimits
from sipsilo.transport.tcp import TcpListener, TcpRegistry
from sipsilo.transport.tls import TlsContexts, TlsLayer
from sipsilo.transport.udp import UdpListener
from sipsilo.transport.worker_link import SharedUdpListener

log = logging.getLogger(__name__)

Receiver = Callable[[bytes, Flow], None]


@dataclass(frozen=True)
class ListenSpec:
    proto: str  # "udp" | "tcp" | "tls" | "ws" | "wss"
    host: str
    port: int


def _family(host: str) -> int:
    return 6 if ":" in host else 4


_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_SOURCE_CACHE_MAX = 4096


def _wildcard(host: str) -> bool:
    return host in _WILDCARDS


def source_address_for(remote_host: str) -> str:
    """The local address the kernel would send from to remote_host.

    A UDP socket is "connected" (no packet leaves) and asked for its name.
    Falls back to the loopback address of the family when there is no route
    or remote_host is not a numeric address.
    """
    fam = socket.AF_INET6 if ":" in remote_host else socket.AF_INET
    fallback = "::1" if fam == socket.AF_INET6 else "127.0.0.1"
    try:
        ipaddress.ip_address(remote_host)
    except ValueError:
        return fallback
    try:
        with socket.socket(fam, socket.SOCK_DGRAM) as probe:
            probe.connect((remote_host, 5060))
            return str(probe.getsockname()[0])
    except OSError:
        return fallback


class Transports:
    def __init__(
        self,
        specs: Iterable[ListenSpec],
        receiver: Receiver,
        on_framing_error: Callable[[bytes, Flow, ParseError], None],
        max_message_size: int = 65535,
        *,
        advertise: tuple[str, int | None] | None = None,
        limits: StreamLimits | None = None,
        hop_limits: StreamLimits | None = None,
        shared_udp: list[socket.socket] | None = None,
        tls: TlsContexts | None = None,
        ws_origins: Iterable[str] = (),
    ) -> None:
        self._specs = list(specs)
        # In a worker process: the supervisor's UDP sockets, one per UDP
        # listen address in order, to send on (transport.worker_link).
        self._shared_udp = list(shared_udp) if shared_udp is not None else None
        self._receiver = receiver
        # hop_limits: the private listener's budget (stream.hop_limits)
        self.tcp = TcpRegistry(receiver, on_framing_error, max_message_size,
                               limits=limits or StreamLimits(), hop_limits=hop_limits)
        self.tls = tls
        self._ws_origins = frozenset(o.strip().rstrip("/").lower() for o in ws_origins)
        self._max_message_size = max_message_size
        self.udp: list[UdpListener] = []
        self.tcp_listeners: list[TcpListener] = []
        self.private: TcpListener | None = None  # see open_private()
        self._bound: tuple[tuple[int, int], list[tuple[str, str, int]]] | None = None
        # [server] advertise: (host, port or None for the listener's port)
        self.advertise = advertise
        self._sources: dict[str, str] = {}  # destination host -> our address toward it

    def share_sockets(self, socks: list[socket.socket]) -> None:
        """A worker process's listening sockets, received from its supervisor:
        the UDP ones in listen order, then the stream ones in listen order."""
        self._shared_udp = list(socks)

    async def open_private(self, where: tuple[str, int] | None = None) -> tuple[str, int]:
        """The private TCP listener, on an ephemeral loopback port (or on the
        (host, port) given: [cluster] advertise), which the other workers and
        instances reach this one at (routing.handover); its address.

        Opened before start(): the flows of the first REGISTERs must already
        name this listener as their owner, or another worker would take them
        for its own (routing.handover.FlowOwner.stamp)."""
        host, port = where or ("127.0.0.1", 0)
        # The other workers' connections come from 127.0.0.1 like any local
        # client's (and the other instances' from a few addresses): they
        # are held to the hop budget, which no client's connection uses.
        self.private = TcpListener(host, port, self.tcp, "tcp", hop=True)
        await self.private.start()
        return self.private.host, self.private.port

    async def start(self) -> None:
        """Open (or take over) every listener; the private one (open_private)
        goes last, so it is never chosen to send from."""
        shared = iter(self._shared_udp or ())
        streams = sum(1 for spec in self._specs if spec.proto in STREAMS)
        given = self._shared_udp is not None and len(self._shared_udp) > 0
        udp_socks = [next(shared) for spec in self._specs if spec.proto == "udp"] if given else []
        stream_socks = list(shared) if given else []
        if given and len(stream_socks) != streams:
            raise ValueError("the supervisor handed over the wrong number of sockets")
        udp_socks.reverse()
        stream_socks.reverse()
        for spec in self._specs:
            if spec.proto == "udp":
                udp = (UdpListener(spec.host, spec.port, self._receiver)
                       if self._shared_udp is None
                       else SharedUdpListener(spec.host, spec.port, self._receiver,
                                              udp_socks.pop()))
                await udp.start()
                self.udp.append(udp)
            elif spec.proto in STREAMS:
                tcp = TcpListener(spec.host, spec.port, self.tcp, spec.proto,
                                  self._layers(spec.proto),
                                  sock=stream_socks.pop() if stream_socks else None)
                await tcp.start()
                self.tcp_listeners.append(tcp)
            else:
                raise ValueError(f"unsupported transport {spec.proto!r}")
        if self.private is not None:
            self.tcp_listeners.append(self.private)

    def _layers(self, proto: str) -> Callable[[], Layer] | None:
        """What each accepted connection of a proto listener gets between socket and SIP."""
        if proto == "tcp":
            return None
        if proto in ("ws", "wss"):
            # wsproto is loaded by a server with a ws/wss listener only, and
            # when that listener is set up, not by its first client.
            from sipsilo.transport import websocket  # noqa: F401
        if proto == "ws":
            return self._ws_layer
        tls = self.tls
        if tls is None:
            raise ValueError(f"a {proto} listener needs the [tls] certificate")

        def secure() -> Layer:
            # The context of now: a certificate reloaded since serves new connections.
            assert tls.server is not None
            inner = self._ws_layer() if proto == "wss" else None
            return TlsLayer(tls.server, server_side=True, inner=inner)

        return secure

    def _ws_layer(self) -> Layer:
        from sipsilo.transport.websocket import WebSocketLayer  # loaded by _layers

        return WebSocketLayer(self._ws_origins, self._max_message_size)

    def close(self) -> None:
        for udp in self.udp:
            udp.close()
        for tcp in self.tcp_listeners:
            tcp.close()
        if self.private is not None and self.private not in self.tcp_listeners:
            self.private.close()  # start() failed after open_private()
        self.tcp.close_all()

    def bound(self) -> list[tuple[str, str, int]]:
        """(proto, host, port) of every listener, with real ports after start."""
        # Asked several times per request; listeners only change at start-up.
        key = (len(self.udp), len(self.tcp_listeners))
        if self._bound is None or self._bound[0] != key:
            self._bound = (key, [("udp", u.host, u.port) for u in self.udp]
                           + [(t.transport, t.host, t.port) for t in self.tcp_listeners])
        return self._bound[1]

    def supports(self, transport: str) -> bool:
        return any(proto == transport for proto, _, _ in self.bound())

    def _listener(
        self, transport: str, remote_host: str, local: tuple[str, int] | None = None
    ) -> tuple[str, int]:
        """The (host, port) of the listener to use toward remote_host.

        The one bound to local when there is one (a response goes out of the
        socket its request came in on; a request to a registered UA out of the
        socket it registered on), else one bound to local's host, else the
        first of the destination's address family.
        """
        candidates = [(h, p) for proto, h, p in self.bound() if proto == transport]
        if not candidates:
            candidates = [(h, p) for _, h, p in self.bound()]
        if not candidates:
            raise ConnectionError(f"no {transport} listener configured")
        fam = _family(remote_host)
        if local is not None:
            if local in candidates:
                return local
            for host, port in candidates:
                if host == local[0] and _family(host) == fam:
                    return host, port
        for host, port in candidates:
            if _family(host) == fam:
                return host, port
        return candidates[0]

    def is_local_address(self, host: str, port: int) -> bool:
        """host:port reaches one of our listeners: a listener's own address,
        the advertised address, or, behind a wildcard listener, any address
        of this machine on that port. What our Via and Record-Route name must
        be recognised here, or requests come back to us as strangers."""
        canon = canonical_host(host)
        for _, lhost, lport in self.bound():
            if self.advertise is not None:
                adv_host, adv_port = self.advertise
                if canonical_host(adv_host) == canon and port == (adv_port or lport):
                    return True
            if lport != port:
                continue
            if canonical_host(lhost) == canon:
                return True
            if _wildcard(lhost) and _family(lhost) == _family(host) and is_machine_address(host):
                return True
        return False

    def source_for(self, remote_host: str) -> str:
        """Our address toward remote_host (cached per destination host)."""
        host = self._sources.get(remote_host)
        if host is None:
            if len(self._sources) >= _SOURCE_CACHE_MAX:
                self._sources.clear()
            host = self._sources[remote_host] = source_address_for(remote_host)
        return host

    def local_address(
        self, transport: str, remote_host: str, local: tuple[str, int] | None = None
    ) -> tuple[str, int]:
        """The address we put in Via/Record-Route for a message to remote_host.

        ``[server] advertise`` when set; else the listener's address, except
        that a wildcard listener (0.0.0.0, ::) is replaced by the real local
        address toward remote_host.
        """
        host, port = self._listener(transport, remote_host, local)
        if self.advertise is not None:
            adv_host, adv_port = self.advertise
            return adv_host, adv_port or port
        if _wildcard(host):
            host = self.source_for(remote_host)
        return host, port

    def advertised(self, flow: Flow) -> tuple[str, int]:
        """Our address as seen by the peer of flow (for Record-Route)."""
        return self.local_address(flow.transport, flow.remote[0], flow.local)

    def _udp_for(self, remote_host: str, local: tuple[str, int] | None = None) -> UdpListener:
        if not self.udp:
            raise ConnectionError("no UDP listener configured")
        fam = _family(remote_host)
        if local is not None:
            for udp in self.udp:
                if udp.local == local:
                    return udp
            for udp in self.udp:
                if udp.host == local[0] and _family(udp.host) == fam:
                    return udp
        for udp in self.udp:
            if _family(udp.host) == fam:
                return udp
        raise ConnectionError(f"no UDP listener for IPv{fam} destination {remote_host}")

    def send_on_flow(self, data: bytes, flow: Flow) -> None:
        """Send back along an existing flow (responses). Raises ConnectionError."""
        if flow.transport == "udp":
            self._udp_for(flow.remote[0], flow.local).send(data, flow.remote)
            return
        conn = self.tcp.of_flow(flow.conn_id, flow.remote) or self.tcp.by_remote(flow.remote)
        if conn is None:
            raise ConnectionError(f"connection to {flow} is closed")
        conn.send(data)

    def send_datagram(self, data: bytes, target: Target) -> Flow:
        """Send to a UDP target now (nothing to wait for). Raises ConnectionError."""
        udp = self._udp_for(target.host, target.local)
        udp.send(data, (target.host, target.port))
        return Flow("udp", udp.local, (target.host, target.port))

    async def send(self, data: bytes, target: Target) -> Flow:
        """Send to a target, opening a TCP or TLS connection when none is open."""
        if target.transport == "udp":
            return self.send_datagram(data, target)
        if target.transport not in STREAMS:
            raise ConnectionError(f"transport {target.transport} is not supported")
        conn = self.tcp.of_flow(target.conn_id, (target.host, target.port))
        if conn is None:
            if target.transport in CLIENT_OPENED:
                raise ConnectionError(f"the {target.transport} connection to {target} is closed")
            # A Route entry on the target: a hand-over to another process's
            # hop listener (routing.handover), a connection of the hop budget.
            conn = await self.tcp.connect(target.host, target.port, target.transport,
                                          self._client_layer(target),
                                          hop=target.route is not None)
        conn.send(data)
        return conn.flow

    def _client_layer(self, target: Target) -> Callable[[], Layer] | None:
        if target.transport != "tls":
            return None
        tls = self.tls
        if tls is None or tls.client is None:
            raise ConnectionError("TLS is not configured")
        context = tls.client
        # SNI and the name checked in the certificate: the URI's host.
        name = target.server_name or target.host
        return lambda: TlsLayer(context, server_side=False, server_hostname=name)


@lru_cache(maxsize=1024)
def is_machine_address(host: str) -> bool:
    """Whether host is an IP address of this machine (binding to it works)."""
    if not is_ip_address(host):
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True

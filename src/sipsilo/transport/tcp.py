"""TCP: a listener, the connections it accepts and those we open.

Stream transports need framing: a message ends after its headers plus
Content-Length bytes (RFC 3261 §18.3). Every connection, accepted or opened,
is registered under an id so that a response, or a later request to a client
that registered over TCP, goes back over the same connection.

Connections are held to ``transport.stream.StreamLimits``: a global and a
per-source cap (a connection beyond them is closed as soon as it is
accepted, or refused when we would open it), a deadline for each message
that trickling bytes do not extend, a header-size cap applied while
reading, and the idle timeout, which spares a registered flow (``pin``: the
client is reached over it). A TLS connection is a ``TcpConnection`` on an
SSL transport and joins the same ``TcpRegistry``. The connections of the
private hop listener, and those we open to another process's, are counted
in a budget of their own (``StreamLimits`` from ``stream.hop_limits``): one
registry, two sets of caps that never share a slot.

TLS and WebSocket connections are these same connections with a layer
(transport.layer) between the socket and the SIP framing, so every rule here
holds for tcp, tls, ws and wss alike. A double-CRLF keep-alive ping between
messages is answered with a CRLF pong (RFC 5626 §3.5.1).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable

from sipsilo.flow import Flow
from sipsilo.sip.errors import ParseError
from sipsilo.sip.parser import StreamFramer
from sipsilo.transport.layer import Layer, LayerError
from sipsilo.transport.stream import (
    MemoryReturn,
    RefusalLog,
    StreamLimits,
    admission,
    overdue,
    peer_key,
    unpinned,
)
from sipsilo.transport.stream import (
    hop_limits as stream_hop_limits,
)
from sipsilo.transport.udp import ListenError

log = logging.getLogger(__name__)

Receiver = Callable[[bytes, Flow], None]
FramingErrorHandler = Callable[[bytes, Flow, ParseError], None]

_ids = itertools.count(1)


class TcpConnection(asyncio.Protocol):
    def __init__(self, registry: TcpRegistry, local: tuple[str, int] | None = None,
                 transport: str = "tcp", layer: Layer | None = None,
                 *, inbound: bool = False, hop: bool = False) -> None:
        self.id = next(_ids)
        self.transport = transport  # "tcp", "tls", "ws" or "wss"
        self._layer = layer
        self._registry = registry
        self._framer = StreamFramer(max_size=registry.max_message_size,
                                    max_header_size=registry.limits.max_header_size)
        self._transport: asyncio.Transport | None = None
        self.local: tuple[str, int] = local or ("", 0)
        self.remote: tuple[str, int] = ("", 0)
        self.closed = asyncio.get_event_loop().create_future()
        self.inbound = inbound
        self.hop = hop
        self.last_active = time.monotonic()
        # Accepted on the hop listener: a stranger until a signed hand-over
        # comes over it (TcpRegistry.hop_request).
        self.proof_due: float | None = (
            self.last_active + registry.hop_limits.message_timeout if hop and inbound else None)
        self.pinned_until = 0.0  # a registered flow: not idle-closed before this
        self.spoke = False  # a complete SIP message has arrived on it
        # An accepted connection owes its first message from the start.
        self.partial_since: float | None = self.last_active if inbound else None
        self.peak_buffered = 0  # the most bytes its framer held (memory given back on close)
        # Done once the layers' handshakes are (at once for plain TCP).
        self.ready: asyncio.Future[None] = asyncio.get_event_loop().create_future()

    @property
    def flow(self) -> Flow:
        return Flow(self.transport, self.local, self.remote, self.id)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance.
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        if peer is None or sock is None:
            # The peer reset the connection between accept() and now (a
            # connect then RST): there is no one to serve, and indexing None
            # raised in the event loop's callback, once per such connection.
            log.debug("tcp connection reset before it could be served")
            transport.close()
            return
        self.remote = (str(peer[0]), int(peer[1]))
        if not self.local[1]:
            self.local = (str(sock[0]), int(sock[1]))
        if not self._registry.add(self):
            transport.close()
            return
        if self._layer is None:
            self.ready.set_result(None)
        else:
            self._write(self._layer.start())

    def data_received(self, data: bytes) -> None:
        now = self.last_active = time.monotonic()
        framer = self._framer
        layered: list[bytes] = []
        if self._layer is not None:
            data, layered = self._through_layer(data)
        try:
            messages = framer.feed(data) if data else []
        except ParseError as exc:
            # Framing is lost for good: nothing after this point can be trusted.
            log.warning("closing %s connection from %s: %s", self.transport, self.flow, exc.reason)
            self.peak_buffered = max(self.peak_buffered, len(data))
            self._registry.on_framing_error(framer.pending, self.flow, exc)
            self.close()
            return
        if framer.buffered > self.peak_buffered:
            self.peak_buffered = framer.buffered
        if framer.take_pings():
            self.send(b"\r\n")  # RFC 5626 §3.5.1: pong
        messages += layered
        if messages:
            self.spoke = True
            # What is left (if anything) is the start of the next message.
            self.partial_since = now if framer.buffered else None
        elif framer.buffered and self.partial_since is None:
            self.partial_since = now
        for message in messages:
            try:
                self._registry.receiver(message, self.flow)
            except Exception:  # the server never dies on input
                log.exception("error handling message on %s", self.flow)

    def _through_layer(self, data: bytes) -> tuple[bytes, list[bytes]]:
        """Bytes through TLS/WebSocket: (stream for the framer, whole messages)."""
        assert self._layer is not None
        try:
            got = self._layer.inbound(data)
        except LayerError as exc:
            log.warning("closing %s connection from %s: %s", self.transport, self.flow, exc)
            self.close()
            return b"", []
        self._write(got.reply)
        if self._layer.ready and not self.ready.done():
            self.ready.set_result(None)
        if got.close:
            if got.error:
                log.warning("closing %s connection from %s: %s", self.transport, self.flow,
                            got.error)
            self.close()
        return got.stream, got.messages

    def _write(self, data: bytes) -> None:
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pinned_until > time.monotonic():
            # Requests to the clients registered over it cannot reach them now.
            log.info("%s connection %s closed: its registrations are unreachable until they "
                     "register again", self.transport, self.flow)
        self._registry.remove(self)
        self._transport = None
        self._framer = StreamFramer(0)  # the buffer goes now, not with the last reference
        if self._registry.on_closed is not None:
            self._registry.on_closed(self.id)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the handshake finished"))
            self.ready.exception()  # retrieved: nobody may be waiting
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError(f"{self.transport} connection {self.id} to {self.remote} "
                                  "is closed")
        self.last_active = time.monotonic()
        self._transport.write(data if self._layer is None else self._layer.outbound(data))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class TcpRegistry:
    """Every open stream connection, by id, by peer address and by source."""

    def __init__(
        self,
        receiver: Receiver,
        on_framing_error: FramingErrorHandler,
        max_message_size: int = 65535,
        *,
        limits: StreamLimits | None = None,
        hop_limits: StreamLimits | None = None,
    ) -> None:
        self.receiver = receiver
        self.on_framing_error = on_framing_error
        self.max_message_size = max_message_size
        self.limits = limits or StreamLimits()
        self.hop_limits = hop_limits or stream_hop_limits(self.limits, 1)
        self.refusals = RefusalLog("tcp")
        self.hop_refusals = RefusalLog("tcp hop")
        self.overdue_closed = 0  # connections closed by a deadline (idle or message)
        self.hop_evicted = 0  # unproven hop connections closed to make room
        self._memory = MemoryReturn()
        self._by_id: dict[int, TcpConnection] = {}
        self._by_remote: dict[tuple[str, int], TcpConnection] = {}
        # Each budget's connections (key: conn.hop), what its global cap counts.
        self._pools: dict[bool, dict[int, TcpConnection]] = {False: {}, True: {}}
        # Accepted connections by budget and peer_key(host): what the per-IP caps count.
        self._by_source: dict[tuple[bool, str], dict[int, TcpConnection]] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future[TcpConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        # Told the id of every connection that closes (the stack fails what
        # was waiting for an answer over it).
        self.on_closed: Callable[[int], None] | None = None

    @property
    def max_connections(self) -> int:
        return self.limits.max_connections

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def hop_connections(self) -> int:
        """How many of the open connections are in the hop budget."""
        return len(self._pools[True])

    def limits_for(self, conn: TcpConnection) -> StreamLimits:
        return self.hop_limits if conn.hop else self.limits

    def add(self, conn: TcpConnection) -> bool:
        """Register a new connection; False (not added, refusal counted) over a cap
        of its budget."""
        now = time.monotonic()
        source = peer_key(conn.remote[0])
        key = (conn.hop, source)
        def refusal() -> str | None:
            return admission(
                conn, self.limits_for(conn), unpinned(self._pools[conn.hop].values(), now),
                lambda: unpinned(self._by_source.get(key, {}).values(), now),
            )

        why = refusal()
        if why is not None and conn.hop and self._evict_unproven(key):
            why = refusal()
        if why is not None:
            (self.hop_refusals if conn.hop else self.refusals).refused(source, why, now)
            return False
        self._by_id[conn.id] = conn
        self._pools[conn.hop][conn.id] = conn
        self._by_remote[conn.remote] = conn
        if conn.inbound:
            self._by_source.setdefault(key, {})[conn.id] = conn
        if self._sweeper is None:
            self._arm_sweeper()
        return True

    def _evict_unproven(self, key: tuple[bool, str] | None = None) -> bool:
        """Room in a full hop budget: close the oldest accepted connection that
        has not proven itself yet, of the source *key* if it has one, else of any.

        A peer proves itself with its first request, milliseconds after the
        connect; a stranger never does. Refusing the newcomer instead would let
        strangers, renewing their connections, keep peers out for good; this
        way they only take each other's places (a proven one is never taken).
        """
        same = self._by_source.get(key, {}) if key is not None else {}
        for pool in (same, self._pools[True]):
            unproven = [c for c in pool.values() if c.inbound and c.proof_due is not None]
            if unproven:
                victim = min(unproven, key=lambda c: c.proof_due or 0.0)
                log.debug("closing hop connection %s: unproven, its place taken", victim.flow)
                self.remove(victim)  # out of the counts now; the close follows
                victim.close()
                self.hop_evicted += 1
                return True
        return False

    def pin(self, conn_id: int | None, seconds: float) -> None:
        """Keep a connection open (no idle close) for seconds: it carries a binding."""
        conn = self.get(conn_id)
        if conn is not None:
            conn.pinned_until = max(conn.pinned_until, time.monotonic() + seconds)

    def hop_request(self, conn_id: int | None, signed: bool) -> None:
        """What the routing layer made of a request that came over a hop
        connection: *signed*, a hand-over whose signature checks, makes it a
        peer's (kept like any other); otherwise it is closed at once unless an
        earlier request proved it (a peer's transactions may be in flight)."""
        conn = self.get(conn_id)
        if conn is None or conn.proof_due is None:
            return
        if signed:
            conn.proof_due = None
        else:
            log.info("closing hop connection %s: not a signed hand-over", conn.flow)
            conn.close()

    def _arm_sweeper(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(
            self.limits.sweep_interval, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        self.close_idle()
        now = time.monotonic()
        self.refusals.flush(now)
        self.hop_refusals.flush(now)
        if self._by_id:
            self._arm_sweeper()

    def close_idle(self) -> int:
        """Close the connections past a deadline (transport.stream.overdue).

        One log line per sweep, not per connection: under a slowloris attack
        every sweep closes a crowd of them.
        """
        now = time.monotonic()
        reasons: Counter[str] = Counter()
        for conn in list(self._by_id.values()):
            why = overdue(conn, self.limits_for(conn), now)
            if why is not None:
                log.debug("closing %s connection %s: %s", conn.transport, conn.flow, why)
                conn.close()
                reasons[why] += 1
        closed = sum(reasons.values())
        if closed:
            log.info("closed %d tcp connection%s (%s)", closed, "" if closed == 1 else "s",
                     "; ".join(f"{n} {why}" for why, n in reasons.items()))
        self.overdue_closed += closed
        return closed

    def remove(self, conn: TcpConnection) -> None:
        if self._by_id.pop(conn.id, None) is None:
            return  # refused: never added
        self._pools[conn.hop].pop(conn.id, None)
        if self._by_remote.get(conn.remote) is conn:
            del self._by_remote[conn.remote]
        key = (conn.hop, peer_key(conn.remote[0]))
        same = self._by_source.get(key)
        if same is not None:
            same.pop(conn.id, None)
            if not same:
                del self._by_source[key]
        self._memory.released(conn.peak_buffered)

    def get(self, conn_id: int | None) -> TcpConnection | None:
        return None if conn_id is None else self._by_id.get(conn_id)

    def of_flow(self, conn_id: int | None, remote: tuple[str, int]) -> TcpConnection | None:
        """Connection *conn_id* of this process, if it is still the one to
        *remote*. Connection ids are counted per process: a flow kept by
        another worker (or an earlier process) may name an id that here is
        somebody else's connection, which must never carry that flow's
        messages."""
        conn = self.get(conn_id)
        return conn if conn is not None and conn.remote == remote else None

    def by_remote(self, remote: tuple[str, int]) -> TcpConnection | None:
        return self._by_remote.get(remote)

    async def connect(self, host: str, port: int, transport: str = "tcp",
                      layer: Callable[[], Layer] | None = None, *,
                      hop: bool = False) -> TcpConnection:
        """An open connection to host:port: an existing one, else a new one.

        *layer* makes the layers of a new connection (TLS); it is ready, its
        handshake done (the peer verified), when this returns. *hop*: to
        another process's hop listener, counted in the hop budget (clients
        filling the public cap must not stop the hand-over).
        """
        existing = self._by_remote.get((host, port))
        if existing is not None and existing.transport == transport:
            return existing
        pending = self._connecting.get((host, port))
        if pending is not None:
            return await asyncio.shield(pending)
        cap = (self.hop_limits if hop else self.limits).max_connections
        if unpinned(self._pools[hop].values(), time.monotonic()) >= cap and not (
                hop and self._evict_unproven()):
            raise ConnectionError(f"cannot connect to {host}:{port}: "
                                  f"{cap} {'hop' if hop else 'tcp'} connections open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TcpConnection] = loop.create_future()
        self._connecting[(host, port)] = fut
        try:
            def made() -> TcpConnection:
                return TcpConnection(self, None, transport, None if layer is None else layer(),
                                     hop=hop)

            async def opened() -> TcpConnection:
                _, proto = await loop.create_connection(made, host, port)
                await proto.ready
                return proto

            proto = await asyncio.wait_for(opened(), timeout=5.0)
            fut.set_result(proto)
            return proto
        except BaseException as exc:
            fut.set_exception(ConnectionError(f"cannot connect to {host}:{port}: {exc}"))
            fut.exception()  # mark retrieved: waiters get it through shield()
            raise ConnectionError(f"cannot connect to {host}:{port}: {exc}") from exc
        finally:
            del self._connecting[(host, port)]

    def close_all(self) -> None:
        self._memory.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._by_id.values()):
            conn.close()


class TcpListener:
    def __init__(self, host: str, port: int, registry: TcpRegistry, transport: str = "tcp",
                 layer: Callable[[], Layer] | None = None,
                 sock: socket.socket | None = None, hop: bool = False) -> None:
        self.host = host
        self.port = port
        self.transport = transport
        self._registry = registry
        self._layer = layer
        # A listening socket bound elsewhere (a worker's, from its supervisor).
        self._sock = sock
        self._hop = hop  # a worker's private hop listener: the hop budget
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._sock is not None:
                self._server = await loop.create_server(self._accept, sock=self._sock)
                self._sock = None
            else:
                self._server = await loop.create_server(
                    self._accept, self.host, self.port, reuse_address=True
                )
        except OSError as exc:
            raise ListenError(self.transport, self.host, self.port, exc) from None
        if not self.port:
            self.port = self._server.sockets[0].getsockname()[1]

    def _accept(self) -> TcpConnection:
        layer = None if self._layer is None else self._layer()
        return TcpConnection(self._registry, (self.host, self.port), self.transport, layer,
                             inbound=True, hop=self._hop)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


def bind_streams(host: str, port: int, count: int, transport: str = "tcp") -> list[socket.socket]:
    """*count* listening sockets on one address with SO_REUSEPORT, one per worker.

    The kernel spreads new connections over them by a hash of the peer's
    address and port, so every worker accepts its own share without waking
    the others (one socket shared by all would wake them all, and the first
    to run takes the connection). Port 0: the first socket picks the port,
    the others take the same one.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(1024)
            sock.setblocking(False)
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise ListenError(transport, host, port, exc) from None
    return socks

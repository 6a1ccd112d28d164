"""Limits every stream connection is held to: TCP today, TLS and WebSocket on top of it.

A stream connection costs the server a socket, a slot and a buffer for as
long as the peer keeps it open, and the peer decides how long that is. These
limits keep one peer from holding what others need:

* ``max_connections``: open connections at once; ``max_connections_per_ip``:
  of those, how many one source may hold (connections a client registered
  over count against neither, so idle strangers cannot lock out phones);
* ``message_timeout``: a message must be complete this long after it began
  (the first one: after the accept), however many bytes trickle in meanwhile
  (a slowloris peer sends one byte a second to look alive);
* ``max_header_size``: a header block is refused once it grows past this,
  before the rest of it is buffered (``sip.parser.StreamFramer``);
* ``idle_timeout``: a connection silent this long is closed, unless pinned.

Connections accepted on a worker's private hop listener (``routing.handover``)
and those we open to another's are a budget of their own (``hop_limits``):
they never take a slot of the public caps, so a stranger filling the hop
cannot lock out clients, and clients filling the public caps cannot cut the
hop. An accepted hop connection must also prove itself: until a request with
a correctly signed flow Route entry came over it (``proof_due``), it is
closed at the hop's first-message deadline whatever else it sends.

A connection class (``transport.tcp.TcpConnection``, and whatever carries TLS
or WebSocket) exposes the few attributes of ``StreamConn``; the registry it
joins applies ``admission`` and ``overdue`` to it and reports refusals
through one ``RefusalLog``. Over TLS, asyncio calls ``connection_made`` only
once the handshake is done, so a listener must bound the handshake itself
(``ssl_handshake_timeout=limits.message_timeout``): neither cap nor deadline
sees a peer that stalls it. A WebSocket connection owes its HTTP upgrade
within the same deadline as a first message.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import ipaddress
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamLimits:
    max_connections: int = 2048
    max_connections_per_ip: int = 32  # 0: no per-source cap
    idle_timeout: float = 3600.0  # 0: never idle-closed
    message_timeout: float = 10.0
    max_header_size: int = 16384
    # How long the peer of a connection we opened may take to answer the
    # request we sent (the transaction's own timeout: fr_timer): before that,
    # its silence is no reason to close the connection and fail the request.
    answer_timeout: float = 32.0

    @property
    def sweep_interval(self) -> float:
        """How often to look for overdue connections: a quarter of the shortest limit."""
        shortest = self.message_timeout
        if self.idle_timeout > 0:
            shortest = min(shortest, self.idle_timeout)
        return min(max(shortest / 4, 0.05), 60.0)


# The hop budget. A hop peer is another worker (from 127.0.0.1, or from the
# advertise address) or a worker of another instance (from that instance's
# address): each holds one connection to us at a time (TcpRegistry.connect
# reuses it), so a source needs about as many slots as a host runs workers;
# twice that covers a connection reopened while the old one is still closing,
# and the floor covers peers running more workers than we do.
HOP_PER_SOURCE_FLOOR = 8
HOP_TOTAL_FLOOR = 256
# A peer writes its hand-over right after the connect: a connection without
# one this long after the accept is a stranger's.
HOP_PROOF_TIMEOUT = 3.0


def hop_limits(limits: StreamLimits, workers: int) -> StreamLimits:
    """The budget of the hop connections of a server of *workers* workers.

    Per source ``max(8, 2 * workers)``, in all ``max(256, 4 * per source)``:
    a stranger can hold at most the per-source share of it, and none of the
    public listeners' slots. The first message, and every later one, is due
    within ``min(tcp_message_timeout, 3 s)``; the idle timeout is the public one.
    """
    per_source = max(HOP_PER_SOURCE_FLOOR, 2 * workers)
    return StreamLimits(
        max_connections=max(HOP_TOTAL_FLOOR, 4 * per_source),
        max_connections_per_ip=per_source,
        idle_timeout=limits.idle_timeout,
        message_timeout=min(limits.message_timeout, HOP_PROOF_TIMEOUT),
        max_header_size=limits.max_header_size,
        answer_timeout=limits.answer_timeout,
    )


class StreamConn(Protocol):
    """What the limits need to know about a connection."""

    remote: tuple[str, int]
    inbound: bool  # accepted from a peer (False: one we opened)
    # accepted on a private hop listener or opened to one: counted in the hop
    # budget (hop_limits), not the public one
    hop: bool
    # an accepted hop connection no signed hand-over came over yet: closed at
    # this monotonic time (None: nothing to prove)
    proof_due: float | None
    last_active: float  # monotonic time of the last byte in or out
    pinned_until: float  # a registered flow: exempt from the limits until then
    spoke: bool  # a complete message has arrived on it
    # When the message being received began (for an accepted connection,
    # waiting for its first one: the accept); None when none is in progress.
    partial_since: float | None


def peer_key(host: str) -> str:
    """The source a per-IP cap counts against.

    An IPv4 address, or for IPv6 its /64: a subscriber usually holds a whole
    /64, and rotating addresses inside it must not multiply its share.
    IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
    """
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def admission(
    conn: StreamConn, limits: StreamLimits, unpinned_total: int,
    unpinned_from_source: Callable[[], int],
) -> str | None:
    """Why a new connection must be refused, or None to take it.

    *limits* and the counts are those of the connection's budget (public or
    hop). Only connections not pinned by a registration count (``unpinned_*``);
    the per-source count is asked for only when the global cap leaves room,
    and only for connections a peer opened (we choose whom we connect to).
    """
    if unpinned_total >= limits.max_connections:
        return f"{limits.max_connections} connections open"
    per_ip = limits.max_connections_per_ip
    if conn.inbound and per_ip > 0 and unpinned_from_source() >= per_ip:
        return f"{per_ip} connections open from that address"
    return None


def overdue(conn: StreamConn, limits: StreamLimits, now: float) -> str | None:
    """Why conn is to be closed now, or None.

    A message in progress must be complete ``message_timeout`` after it began
    whatever arrives meanwhile (slowloris); otherwise silence closes it after
    ``idle_timeout``, or already after ``message_timeout`` while a peer that
    opened the connection has not sent one complete message (after
    ``answer_timeout`` on one we opened: the peer owes us only the answer to
    our request, which a phone may take seconds to give, and closing the
    connection before would fail a request the phone still gets). A
    registered flow is exempt from both.
    An accepted hop connection that has not carried a signed hand-over by its
    ``proof_due`` goes then, however busy it keeps itself.
    """
    if now < conn.pinned_until:
        return None
    if conn.proof_due is not None and now >= conn.proof_due:
        return "no signed hand-over"
    if conn.partial_since is not None and now - conn.partial_since >= limits.message_timeout:
        return f"no complete message within {limits.message_timeout:g} s"
    idle = limits.idle_timeout if limits.idle_timeout > 0 else math.inf
    if not conn.spoke:
        idle = min(idle, limits.message_timeout if conn.inbound
                   else max(limits.message_timeout, limits.answer_timeout))
    if now - conn.last_active >= idle:
        return f"idle for {idle:g} s"
    return None


class RefusalLog:
    """Connections refused: all counted, logged at most once per interval.

    A flood of refusals is what an attack looks like; a log line for each
    would turn it into an attack on the disk. The first refusal is logged at
    once, later ones as one summary line per interval (``flush``).
    """

    _MAX_SOURCES = 1024  # distinct sources remembered between two lines

    def __init__(self, transport: str, interval: float = 10.0) -> None:
        self.transport = transport
        self.interval = interval
        self.total = 0
        self._reasons: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._logged_at = -math.inf

    def refused(self, source: str, reason: str, now: float) -> None:
        self.total += 1
        self._reasons[reason] += 1
        if source in self._sources or len(self._sources) < self._MAX_SOURCES:
            self._sources[source] += 1
        if now - self._logged_at >= self.interval:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Log what was refused since the last line (called by the periodic sweep too)."""
        if not self._reasons or now - self._logged_at < self.interval:
            return
        count = sum(self._reasons.values())
        reasons = "; ".join(f"{n} with {why}" for why, n in self._reasons.items())
        source, from_source = self._sources.most_common(1)[0]
        log.warning("refused %d %s connection%s (%s), %d of them from %s",
                    count, self.transport, "" if count == 1 else "s", reasons,
                    from_source, source)
        self._reasons.clear()
        self._sources.clear()
        self._logged_at = now


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, from the symbols already loaded; None elsewhere."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MemoryReturn:
    """Hands freed buffer memory back to the system after connections close.

    glibc keeps freed heap memory for reuse; after thousands of connections
    that each held a buffer close, the process would keep their peak in RSS
    for good. Once ``threshold`` buffer bytes were released, ``malloc_trim``
    returns the free pages, at most once per ``delay`` seconds (a walk of the
    heap: cheap, but not to be done per connection). A no-op without glibc.
    """

    def __init__(self, threshold: int = 4 * 1024 * 1024, delay: float = 1.0) -> None:
        self.threshold = threshold
        self.delay = delay
        self.trims = 0
        self._released = 0
        self._trim = _malloc_trim()
        self._pending: asyncio.TimerHandle | None = None

    def released(self, nbytes: int) -> None:
        """nbytes of buffers were freed; trim soon once enough were."""
        self._released += nbytes
        if self._released >= self.threshold and self._pending is None and self._trim:
            self._pending = asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._pending = None
        self._released = 0
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


def unpinned(conns: Iterable[StreamConn], now: float) -> int:
    """How many of conns count against the caps (not pinned by a registration)."""
    return sum(1 for c in conns if c.pinned_until <= now)

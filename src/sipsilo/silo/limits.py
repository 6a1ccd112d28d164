"""Abuse limits of the message store: what m_store refuses before the INSERT.

Three kinds, each answered with its own SIP status and a reason phrase that
names the limit:

* values a backend cannot hold (:func:`fit_refusal`): PostgreSQL and MariaDB
  refuse a username over 64 characters, a NUL, a body over 65,535 bytes...
  where SQLite stores anything. Checked here against the schema's own column
  sizes, the answer is the same permanent 4xx on every backend, and 503 stays
  what it means: the database is unreachable, try again later;
* the rate of stores from one source address that nobody authenticated
  (:class:`SourceRate`, a token bucket per source IP): 503 with Retry-After;
* caps on stored rows (:class:`StoreQuota`): per recipient (486, as Kamailio's
  msilo answers a full mailbox), per sender and for the whole silo (507).

Counting is cheap: the counts come from indexed queries (the recipient's
(username, domain) index, the sender index, COUNT(*) for the total) cached for
a few seconds and moved on by this process's own stores in between, so a burst
costs one query per new recipient, not a COUNT(*) of the table per message. A
count may lag behind other instances' stores or deliveries by up to the cache
time: the caps are exact to within a few seconds of traffic.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sipsilo.db.schema import KAMAILIO_COLUMNS

from .compose import Refusal
from .store import NewMessage, SiloStore

#: The smallest TEXT/BLOB of the three backends: MySQL's TEXT and BLOB, 65,535 bytes.
LOB_MAX_BYTES = 65535

_VARCHAR = {c.name: c.length for c in KAMAILIO_COLUMNS if c.length is not None}

# Seconds a count is trusted: per recipient / sender, and the table's total
# (a COUNT(*) of the whole table, so re-read less often).
KEY_TTL = 5.0
TOTAL_TTL = 30.0
# Cached per-recipient/sender counts kept at most (made-up recipients by the
# thousand must not grow the cache without bound).
MAX_ENTRIES = 100_000


def fit_refusal(row: NewMessage) -> Refusal | None:
    """Why *row* cannot be stored on every backend, or None when it can.

    A recipient user or domain too long is a Request-URI problem (414); a
    From, To or Call-ID too long, or a NUL anywhere, a malformed request
    (400); headers or a body larger than a TEXT/BLOB column, an entity too
    large (413). Lengths are characters, as VARCHAR counts them.
    """
    varchars = (
        ("username", row.username, "recipient user", 414),
        ("domain", row.domain, "recipient domain", 414),
        ("src_addr", row.src_addr, "From URI", 400),
        ("dst_addr", row.dst_addr, "To URI", 400),
        ("callid", row.callid, "Call-ID", 400),
    )
    for column, value, what, status in varchars:
        if "\x00" in value:
            return Refusal(400, f"Bad Request - NUL character in {what}")
        limit = _VARCHAR[column]
        if len(value) > limit:
            phrase = "Request-URI Too Long" if status == 414 else "Bad Request"
            return Refusal(status, f"{phrase} - {what} longer than {limit} characters")
    for value, what in ((row.extra_hdrs, "header"), (row.ctype, "Content-Type")):
        if "\x00" in value:
            return Refusal(400, f"Bad Request - NUL character in {what}")
        size = len(value.encode("utf-8", "surrogateescape"))
        if size > LOB_MAX_BYTES:
            return Refusal(413, f"Request Entity Too Large - {what}s to store are {size}"
                                f" bytes, over {LOB_MAX_BYTES}")
    if len(row.body) > LOB_MAX_BYTES:
        return Refusal(413, f"Message body too large ({len(row.body)} > {LOB_MAX_BYTES}"
                            " bytes the store holds)")
    return None


def source_key(address: str) -> str:
    """The rate-limited unit of a source address: the address itself for IPv4,
    its /64 for IPv6, since one host usually holds a whole /64 and could
    otherwise take a fresh address (and a fresh bucket) per request."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    except ValueError:
        return address


class SourceRate:
    """A token bucket per source (see :func:`source_key`): *burst* stores at
    once, then *rate* per second. Buckets of the least recently seen sources
    are dropped beyond *max_sources*, so spoofed addresses cannot grow memory
    without bound."""

    def __init__(self, rate: float, burst: int, *, max_sources: int = 65536,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, when)

    def wait(self, source: str) -> float:
        """0.0 if a store from *source* may go ahead now (it is counted), else
        the seconds until it may."""
        now = self._clock()
        source = source_key(source)
        tokens, then = self._buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[source] = (tokens, now)  # re-inserted: most recent last
        if len(self._buckets) > self.max_sources:
            del self._buckets[next(iter(self._buckets))]
        return wait


@dataclass(frozen=True)
class Caps:
    """Rows a recipient, a sender and the whole silo may have (0: no cap)."""

    per_recipient: int = 0
    per_sender: int = 0
    total: int = 0


class StoreQuota:
    """The row caps, on cached counts (see the module docstring)."""

    def __init__(self, store: SiloStore, caps: Caps, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.caps = caps
        self._clock = clock
        self._counts: dict[tuple[str, ...], tuple[int, float]] = {}  # key -> (count, read at)

    async def refusal(self, row: NewMessage, now: int) -> Refusal | None:
        """The cap *row* would exceed, as the answer to give; None if it fits."""
        caps = self.caps
        total = await self._count(("total",), TOTAL_TTL, self.store.count) if caps.total else -1
        # A recipient or sender cannot have more rows than the whole table:
        # while the total is below a cap, that cap needs no query.
        if caps.per_recipient and not 0 <= total < caps.per_recipient:
            n = await self._count(("to", row.username, row.domain), KEY_TTL,
                                  lambda: self.store.count_for(row.username, row.domain, now))
            if n >= caps.per_recipient:
                return Refusal(486, f"Busy Here - mailbox full ({n} messages)")
        if caps.per_sender and not 0 <= total < caps.per_sender:
            n = await self._count(("from", row.src_addr), KEY_TTL,
                                  lambda: self.store.count_from(row.src_addr))
            if n >= caps.per_sender:
                return Refusal(507, "Insufficient Storage - sender's quota of"
                                    f" {caps.per_sender} stored messages reached")
        if caps.total and total >= caps.total:
            return Refusal(507, f"Insufficient Storage - message store full ({total} messages)")
        return None

    def stored(self, row: NewMessage) -> None:
        """One more row: move the cached counts on until they are read again."""
        for key in (("total",), ("to", row.username, row.domain), ("from", row.src_addr)):
            got = self._counts.get(key)
            if got is not None:
                self._counts[key] = (got[0] + 1, got[1])

    async def _count(self, key: tuple[str, ...], ttl: float,
                     read: Callable[[], Awaitable[int]]) -> int:
        now = self._clock()
        got = self._counts.get(key)
        if got is not None and now - got[1] < ttl:
            return got[0]
        n = await read()
        if len(self._counts) >= MAX_ENTRIES:
            self._counts.clear()
        self._counts[key] = (n, now)
        return n

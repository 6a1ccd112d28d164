"""Transactions that have finished their work but must still absorb retransmissions.

A non-INVITE transaction over UDP lingers after its final response: a server
transaction for timer J (64*T1, 32 s) to answer a retransmitted request with
the same final response, a client transaction for timer K to swallow
retransmitted responses. At thousands of messages per second that is tens of
thousands of transactions whose whole remaining behaviour is "re-send these
bytes" or "drop it". Keeping the full machine, the parsed request and
response and a timer handle for each costs several kilobytes apiece; this
table keeps only the key, the bytes and the flow. Entries are expired from
one FIFO queue per linger duration (J's 32 s, K's 5 s, and 0 s where a
reliable transport needs no lingering): inside one queue every entry has the
same lifetime, so arrival order is expiry order and each entry goes on time --
a K entry never waits behind the J entries added before it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from sipsilo.flow import Flow

Key = tuple[str, ...]
_FLOWS_MAX = 100_000
_FlowTuple = tuple[str, tuple[str, int], tuple[str, int], "int | None"]
_SEP = "\x00"  # never in a branch, host, port or method


class CompletedTransactions:
    """Keys are stored joined into one string, and nothing per entry is a tuple
    or another container: strings, bytes and floats are not tracked by the
    cyclic GC, so tens of thousands of entries cost no collection time (each
    new tuple would be examined by the next young-generation collection, a
    few milliseconds at a time under load). It also halves their memory."""

    __slots__ = ("_clock", "_finals", "_flow_of", "_flows", "_queues")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # seconds, monotonic; a test's own clock goes here
        self._finals: dict[str, bytes | None] = {}
        # Only entries that have a flow; the flow tuple is shared by all the
        # entries of one client (one socket), so it is not one per entry.
        self._flow_of: dict[str, _FlowTuple] = {}
        # linger duration -> (deadlines, keys), in arrival (= expiry) order
        self._queues: dict[float, tuple[deque[float], deque[str]]] = {}
        self._flows: dict[_FlowTuple, _FlowTuple] = {}

    def __len__(self) -> int:
        return len(self._finals)

    def __contains__(self, key: Key) -> bool:
        return _SEP.join(key) in self._finals

    def add(self, key: Key, final: bytes | None, flow: Flow | None, linger: float) -> None:
        """Absorb retransmissions for `linger` seconds (final: the bytes to re-send)."""
        k = _SEP.join(key)
        self._finals[k] = final
        if flow is not None:
            packed = (flow.transport, flow.local, flow.remote, flow.conn_id)
            self._flow_of[k] = self._flows.setdefault(packed, packed)
        else:
            self._flow_of.pop(k, None)
        queue = self._queues.get(linger)
        if queue is None:
            queue = self._queues[linger] = (deque(), deque())
        queue[0].append(self._clock() + linger)
        queue[1].append(k)

    def get(self, key: Key) -> tuple[bytes | None, Flow | None] | None:
        k = _SEP.join(key)
        if k not in self._finals:
            return None
        packed = self._flow_of.get(k)
        return self._finals[k], None if packed is None else Flow(*packed)

    def expire(self) -> int:
        """Drop entries whose time is up; cheap enough to call on every tick."""
        now = self._clock()
        finals, flow_of, dropped = self._finals, self._flow_of, 0
        for deadlines, keys in self._queues.values():
            while deadlines and deadlines[0] <= now:
                deadlines.popleft()
                k = keys.popleft()
                finals.pop(k, None)
                flow_of.pop(k, None)
                dropped += 1
        if not finals or len(self._flows) > _FLOWS_MAX:
            self._flows.clear()  # only a sharing aid: rebuilt as entries come
        return dropped

    def clear(self) -> None:
        self._flows.clear()
        self._finals.clear()
        self._flow_of.clear()
        self._queues.clear()

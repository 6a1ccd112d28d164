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

from sipsilo.transport.flow import Flow

Key = tuple[str, ...]
_FlowTuple = tuple[str, tuple[str, int], tuple[str, int], "int | None"]


class CompletedTransactions:
    __slots__ = ("_entries", "_queues")

    def __init__(self) -> None:
        # The flow is kept as a plain tuple: tuples of strings and numbers drop
        # out of the cyclic GC's tracking, tens of thousands of Flow objects
        # would make every full collection walk them.
        self._entries: dict[Key, tuple[bytes | None, _FlowTuple | None]] = {}
        # linger duration -> (deadline, key) in arrival (= expiry) order
        self._queues: dict[float, deque[tuple[float, Key]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def add(self, key: Key, final: bytes | None, flow: Flow | None, linger: float) -> None:
        """Absorb retransmissions for `linger` seconds (final: the bytes to re-send)."""
        packed = None if flow is None else (flow.transport, flow.local, flow.remote, flow.conn_id)
        self._entries[key] = (final, packed)
        queue = self._queues.get(linger)
        if queue is None:
            queue = self._queues[linger] = deque()
        queue.append((time.monotonic() + linger, key))

    def get(self, key: Key) -> tuple[bytes | None, Flow | None] | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        final, packed = hit
        return final, None if packed is None else Flow(*packed)

    def expire(self) -> int:
        """Drop entries whose time is up; cheap enough to call on every tick."""
        now = time.monotonic()
        entries, dropped = self._entries, 0
        for queue in self._queues.values():
            while queue and queue[0][0] <= now:
                _, key = queue.popleft()
                entries.pop(key, None)
                dropped += 1
        return dropped

    def clear(self) -> None:
        self._entries.clear()
        self._queues.clear()

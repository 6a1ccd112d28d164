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

import sys
import time
from collections import deque

from sipsilo.transport.flow import Flow

Key = tuple[str, ...]
# Which part of a key is unique per transaction (the branch), by key length:
# server keys ("3261", branch, host, port, method), client keys (branch, method).
# The other parts repeat and are interned.
_UNIQUE_PART = {5: 1, 2: 0}
_FLOWS_MAX = 100_000
_FlowTuple = tuple[str, tuple[str, int], tuple[str, int], "int | None"]


class CompletedTransactions:
    __slots__ = ("_entries", "_flows", "_queues")

    def __init__(self) -> None:
        # The flow is kept as a plain tuple: tuples of strings and numbers drop
        # out of the cyclic GC's tracking, tens of thousands of Flow objects
        # would make every full collection walk them.
        self._entries: dict[Key, tuple[bytes | None, _FlowTuple | None]] = {}
        # linger duration -> (deadline, key) in arrival (= expiry) order
        self._queues: dict[float, deque[tuple[float, Key]]] = {}
        self._flows: dict[_FlowTuple, _FlowTuple] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def add(self, key: Key, final: bytes | None, flow: Flow | None, linger: float) -> None:
        """Absorb retransmissions for `linger` seconds (final: the bytes to re-send)."""
        packed = None
        if flow is not None:
            packed = (flow.transport, flow.local, flow.remote, flow.conn_id)
            # Many transactions share a flow (one client, one socket): keep one
            # copy of it, and one of each repeated key part (host, port, method).
            packed = self._flows.setdefault(packed, packed)
        key = tuple(k if i == _UNIQUE_PART.get(len(key)) else sys.intern(k)
                    for i, k in enumerate(key))
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
        if not entries or len(self._flows) > _FLOWS_MAX:
            self._flows.clear()  # only a sharing aid: rebuilt as entries come
        return dropped

    def clear(self) -> None:
        self._flows.clear()
        self._entries.clear()
        self._queues.clear()

"""The location service: AoR → bindings.

``LocationService`` is the interface the registrar, the proxy's lookup and the
silo's delivery engine share; ``MemoryLocationService`` is the in-process
implementation (bindings are soft state that UAs refresh, so losing them on a
restart is what Kamailio's ``db_mode=0`` does too).

Every method normalises the AoR it is given (``normalise_aor``), so callers
may pass ``SipUri.aor()`` output or a ``sips:`` AoR.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from abc import ABC, abstractmethod

from sipsilo.registrar.binding import Binding, normalise_aor

# A module-level alias: inside the classes below the name ``list`` is the
# method, so annotations written as ``list[Binding]`` would resolve to it.
BindingList = list[Binding]


def keyed(binding: Binding) -> Binding:
    """*binding* with its AoR in the one spelling the tables are keyed by."""
    key = normalise_aor(binding.aor)
    return binding if binding.aor == key else dataclasses.replace(binding, aor=key)


def lookup_order(binding: Binding) -> tuple[float, float]:
    """Sort key: highest q first, then most recently (re)registered first."""
    return (-binding.q, -binding.registered_at)


class LocationService(ABC):
    """Async so SQL/Redis backends fit the same interface."""

    @abstractmethod
    async def lookup(self, aor: str, now: float) -> BindingList:
        """Unexpired bindings of ``aor`` in ``lookup_order`` (expired ones are
        excluded even before ``expire`` has swept them)."""

    @abstractmethod
    async def save(self, binding: Binding) -> None:
        """Insert, or replace the binding with the same (aor, contact)."""

    @abstractmethod
    async def remove(self, aor: str, contact: str) -> Binding | None:
        """Drop one binding; returns it, or None when there was none."""

    @abstractmethod
    async def remove_all(self, aor: str) -> BindingList:
        """Drop every binding of ``aor`` (expired ones too); returns them."""

    @abstractmethod
    async def expire(self, now: float) -> BindingList:
        """Drop and return every binding whose ``expires_at <= now``."""

    @abstractmethod
    async def list(self, aor: str | None = None, now: float | None = None) -> BindingList:
        """Bindings of ``aor`` (every AoR when None), for admin/CLI views.

        With ``now`` expired bindings are left out. Sorted by AoR, then in
        ``lookup_order``.
        """


class MemoryLocationService(LocationService):
    """Dict by AoR plus a min-heap of expiry times.

    The heap makes ``expire`` O(expired · log n) instead of a full scan. Heap
    entries are not removed when a binding is refreshed or deleted (lazy
    deletion): ``expire`` re-checks the live binding before dropping it, and
    the heap is rebuilt when stale entries outnumber live ones.
    """

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()  # tie-breaker: strings never get compared
        self._count = 0

    def __len__(self) -> int:
        """Number of stored bindings (expired-but-unswept included)."""
        return self._count

    async def lookup(self, aor: str, now: float) -> BindingList:
        contacts = self._by_aor.get(normalise_aor(aor))
        if not contacts:
            return []
        live = [b for b in contacts.values() if b.expires_at > now]
        live.sort(key=lookup_order)
        return live

    async def save(self, binding: Binding) -> None:
        binding = keyed(binding)
        key = binding.aor
        contacts = self._by_aor.setdefault(key, {})
        if binding.contact not in contacts:
            self._count += 1
        contacts[binding.contact] = binding
        heapq.heappush(self._heap, (binding.expires_at, next(self._seq), key, binding.contact))
        if len(self._heap) > 2 * self._count + 64:
            self._rebuild_heap()

    async def remove(self, aor: str, contact: str) -> Binding | None:
        key = normalise_aor(aor)
        contacts = self._by_aor.get(key)
        if contacts is None:
            return None
        binding = contacts.pop(contact, None)
        if binding is not None:
            self._count -= 1
            if not contacts:
                del self._by_aor[key]
        return binding

    async def remove_all(self, aor: str) -> BindingList:
        contacts = self._by_aor.pop(normalise_aor(aor), None)
        if not contacts:
            return []
        self._count -= len(contacts)
        return sorted(contacts.values(), key=lookup_order)

    async def expire(self, now: float) -> BindingList:
        dropped: BindingList = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, key, contact = heapq.heappop(heap)
            contacts = self._by_aor.get(key)
            if contacts is None:
                continue
            binding = contacts.get(contact)
            # A refreshed binding has a later expires_at (and its own heap
            # entry), so only drop what is really expired.
            if binding is None or binding.expires_at > now:
                continue
            del contacts[contact]
            self._count -= 1
            if not contacts:
                del self._by_aor[key]
            dropped.append(binding)
        return dropped

    async def list(self, aor: str | None = None, now: float | None = None) -> BindingList:
        if aor is None:
            keys = sorted(self._by_aor)
        else:
            key = normalise_aor(aor)
            keys = [key] if key in self._by_aor else []
        out: BindingList = []
        for key in keys:
            bindings = [b for b in self._by_aor[key].values() if now is None or b.expires_at > now]
            bindings.sort(key=lookup_order)
            out.extend(bindings)
        return out

    def _rebuild_heap(self) -> None:
        self._heap = [
            (b.expires_at, next(self._seq), key, b.contact)
            for key, contacts in self._by_aor.items()
            for b in contacts.values()
        ]
        heapq.heapify(self._heap)

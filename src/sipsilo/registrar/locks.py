"""Per-AoR serialisation of REGISTER processing.

``Registrar.handle`` reads the bindings, validates, then writes: several
awaits that a SQL/Redis location service may suspend in. Two REGISTERs for
the same AoR interleaving there could both pass the CSeq and max_contacts
checks, so they take turns; different AoRs never wait for each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class KeyedLocks:
    def __init__(self) -> None:
        # lock and the number of tasks holding or waiting for it; the entry
        # goes when that drops to zero so the dict does not grow per AoR seen.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

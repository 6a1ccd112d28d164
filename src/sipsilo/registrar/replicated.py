"""An in-memory location service copied into every worker process.

With ``[server] workers`` > 1 and no ``[registrar] db_url``, each worker keeps
the whole location table in memory. A REGISTER is handled by the worker of
its AoR (workers.keys), which applies the change and publishes it; the
supervisor passes it to every other worker, which applies it too. Lookups stay
local and as cheap as with one process; a worker that must reach a user it
does not own (the offline notice to a sender who is registered here) still
finds the binding. Expiry needs no messages: every copy expires the same
bindings at the same times.

The UDP flows in the bindings stay valid in every worker, because every
worker sends on the same listening sockets.
"""

from __future__ import annotations

import builtins
import logging
import pickle
from collections.abc import Callable, Coroutine
from typing import Any

from sipsilo.registrar.binding import Binding
from sipsilo.registrar.location import BindingList, LocationService, MemoryLocationService

log = logging.getLogger(__name__)

_OPS = frozenset({"save", "remove", "remove_all"})


class ReplicatedLocation(LocationService):
    def __init__(self, publish: Callable[[bytes], None]) -> None:
        self.inner = MemoryLocationService()
        self._publish = publish

    def __len__(self) -> int:
        return len(self.inner)

    async def lookup(self, aor: str, now: float) -> BindingList:
        return await self.inner.lookup(aor, now)

    async def save(self, binding: Binding) -> None:
        await self.inner.save(binding)
        self._publish(pickle.dumps(("save", (binding,))))

    async def remove(self, aor: str, contact: str) -> Binding | None:
        gone = await self.inner.remove(aor, contact)
        if gone is not None:
            self._publish(pickle.dumps(("remove", (aor, contact))))
        return gone

    async def remove_all(self, aor: str) -> BindingList:
        gone = await self.inner.remove_all(aor)
        if gone:
            self._publish(pickle.dumps(("remove_all", (aor,))))
        return gone

    async def expire(self, now: float) -> BindingList:
        return await self.inner.expire(now)

    async def list(self, aor: str | None = None, now: float | None = None) -> BindingList:
        return await self.inner.list(aor, now)

    def apply(self, payload: bytes) -> None:
        """A change another worker published (it comes from our own supervisor)."""
        op, args = pickle.loads(payload)
        if op not in _OPS:
            log.warning("unknown replicated location change %r ignored", op)
            return
        _run_now(getattr(self.inner, op)(*args))

    def snapshot(self, now: float) -> builtins.list[bytes]:
        """The whole table as changes to apply to an empty one: what a worker
        started in place of one that died gets before it serves (the supervisor
        keeps a copy for that; expired bindings are dropped here)."""
        _run_now(self.inner.expire(now))
        bindings: BindingList = _run_now(self.inner.list(None, now))
        return [pickle.dumps(("save", (b,))) for b in bindings]


def _run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine of the memory service, which never suspends, to its end now.

    Applied in arrival order, synchronously: a save then a remove of the same
    binding must not be reordered.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the memory location service suspended; change not applied")

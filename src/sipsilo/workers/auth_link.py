"""Authentication replay and failure state held by the supervisor for its workers.

With ``[server] workers`` > 1 and no ``[cluster] redis_url``, the workers must still
share one nonce-count record per nonce and one failure budget per (address, account):
requests are spread over the workers by their *target* user, so bob's guesses as the
sender of MESSAGEs to different users reach different workers. The supervisor already
sits between the workers; it keeps one :class:`~sipsilo.auth.shared.LocalState` (the same
tables a single process uses) and answers each worker's questions over its link, one
round trip per question (as many as Redis needs, and cheaper: README, "Authentication",
and scripts/bench_auth_state.py).

The questions and answers are small JSON texts; :class:`LinkState` is the worker's
:class:`~sipsilo.auth.shared.AuthState`, :class:`AuthTable` the supervisor's end. A
supervisor that does not answer within ``TIMEOUT`` counts as unavailable: the worker
fails closed like with Redis down (and a worker whose supervisor is gone stops anyway).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sipsilo.auth.nonce import NonceManager
from sipsilo.auth.policy import FailureTracker
from sipsilo.auth.shared import LocalState, StateUnavailable
from sipsilo.transport.worker_link import LinkClosed, WorkerLink

log = logging.getLogger("sipsilo.auth")

TIMEOUT = 2.0


class LinkState:
    """A worker's :class:`~sipsilo.auth.shared.AuthState`: the supervisor's tables."""

    def __init__(self, link: WorkerLink, timeout: float = TIMEOUT) -> None:
        self._link = link
        self._timeout = timeout
        self.down = False

    async def _ask(self, *question: Any) -> Any:
        try:
            answer = await asyncio.wait_for(
                self._link.ask(json.dumps(question, separators=(",", ":")).encode()),
                self._timeout)
        except (LinkClosed, TimeoutError) as exc:
            if not self.down:
                self.down = True
                log.warning("shared authentication state unavailable (supervisor: %s); "
                            "nobody can log in until it answers again",
                            str(exc) or "no answer in time")
            raise StateUnavailable(f"supervisor: {exc}") from None
        if self.down:
            self.down = False
            log.warning("shared authentication state reachable again (supervisor)")
        return json.loads(answer)

    async def blocked_until(self, key: str, now: float) -> float | None:
        until = await self._ask("b", key, now)
        return None if until is None else float(until)

    async def failure(self, key: str, now: float) -> bool:
        return bool(await self._ask("f", key, now))

    async def accept(self, nonce: str, issued_at: int, nc: int | None, account: str,
                     key: str, now: float) -> bool:
        return bool(await self._ask("a", nonce, issued_at, nc, account, key, now))

    async def aclose(self) -> None:
        return None


class AuthTable:
    """The supervisor's end: one table for every worker, answered synchronously."""

    def __init__(self, secret: bytes, realm: str, *, nonce_expires: int, max_failures: int,
                 block_time: float) -> None:
        self.nonces = NonceManager(secret, realm, nonce_expires)
        self.failures = FailureTracker(max_failures, block_time)
        self.state = LocalState(self.nonces, self.failures)

    def answer(self, question: bytes) -> bytes:
        """The answer to one worker's question (``null`` for one not understood)."""
        try:
            op, *args = json.loads(question)
            result: Any
            if op == "b":
                result = self.failures.blocked_until(str(args[0]), float(args[1]))
            elif op == "f":
                result = self.failures.failure(str(args[0]), float(args[1]))
            elif op == "a":
                nonce, ts, nc, account, key, _now = args
                result = self.state.accept_now(str(nonce), int(ts),
                                               None if nc is None else int(nc), str(account),
                                               str(key))
            else:
                result = None
        except (ValueError, TypeError, IndexError) as exc:
            log.warning("worker authentication question not understood: %s", exc)
            result = None
        return json.dumps(result).encode()

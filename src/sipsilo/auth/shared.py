"""Where replay and failure-blocking state lives: one process, or shared.

Digest authentication keeps two kinds of state between requests: the highest
nonce-count accepted per nonce (a replay is refused) and the failed attempts per
(source address, account) (a guesser is blocked). If each process kept its own, a
request replayed to another worker or instance would be accepted there, and a guesser
spreading his guesses over N processes would get N budgets. :class:`AuthState` is the
one interface :class:`~sipsilo.auth.policy.Authenticator` asks, with three homes:

* :class:`LocalState`: this process's memory (:class:`~sipsilo.auth.nonce.NonceManager`'s
  table and a :class:`~sipsilo.auth.policy.FailureTracker`); no I/O at all, for one
  process without ``[cluster] redis_url``;
* :class:`~sipsilo.auth.redis_state.RedisState`: one Redis for every worker and
  instance of a deployment;
* the supervisor's memory for its workers (:mod:`sipsilo.workers.auth_link`), asked over
  the worker link when there is no Redis.

The keys are plain text that means the same in every process: the nonce itself, and
"source address + ``sip:user@domain``" of the normalised account.

A shared state that cannot be reached raises :class:`StateUnavailable`; the
authenticator then fails *closed*: no nonce is accepted, so nobody logs in, and a right
password is answered exactly like a wrong one (no oracle while the state is away).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sipsilo.auth.nonce import NonceManager

if TYPE_CHECKING:
    from sipsilo.auth.policy import FailureTracker

__all__ = ["AuthState", "LocalState", "StateUnavailable"]


class StateUnavailable(Exception):
    """The shared state did not answer (Redis down, supervisor gone)."""


class AuthState(Protocol):
    async def blocked_until(self, key: str, now: float) -> float | None:
        """Until when *key* (address + account) is blocked; None: not blocked."""

    async def failure(self, key: str, now: float) -> bool:
        """Count one failure of *key*; True when *key* is blocked from now on."""

    async def accept(self, nonce: str, issued_at: int, nc: int | None, account: str,
                     key: str, now: float) -> bool:
        """Record one use of a verified nonce by *account*; False if it is a replay.

        *nc* None: no qop (the nonce is single-use). On success the failures of
        *key* are forgotten, in the same step.
        """

    async def aclose(self) -> None: ...


class LocalState:
    """This process's memory: the in-process fast path (no I/O, nothing awaited)."""

    def __init__(self, nonces: NonceManager, failures: FailureTracker) -> None:
        self.nonces = nonces
        self.failures = failures

    async def blocked_until(self, key: str, now: float) -> float | None:
        return self.failures.blocked_until(key, now)

    async def failure(self, key: str, now: float) -> bool:
        return self.failures.failure(key, now)

    async def accept(self, nonce: str, issued_at: int, nc: int | None, account: str,
                     key: str, now: float) -> bool:
        return self.accept_now(nonce, issued_at, nc, account, key)

    def accept_now(self, nonce: str, issued_at: int, nc: int | None, account: str,
                   key: str) -> bool:
        """:meth:`accept` without a coroutine (the supervisor answers its workers so)."""
        if not self.nonces.record(nonce, issued_at, nc, account):
            return False
        self.failures.success(key)
        return True

    async def aclose(self) -> None:
        return None

"""Replay and failure state in Redis (``[cluster] redis_url``), for every worker and
instance of a deployment.

Two kinds of keys under ``[cluster] redis_prefix``:

* ``<prefix>nonce:<nonce>`` = ``"<highest nc> <account>"`` (nc ``-1``: used without qop,
  single-use), expiring when the nonce does (``nonce_expires`` after its issue time,
  plus the clock skew nonces are accepted with). One Lua script compares and sets it
  and, on success, deletes the account's failure entry: two processes cannot both
  accept one nonce-count (Redis runs a script alone), and a successful login costs
  one round trip.
* ``<prefix>fail:<address> sip:user@domain`` = a hash ``{n: failures, t: last}``, expiring
  ``block_time`` after the last failure. The same rules as
  :class:`~sipsilo.auth.policy.FailureTracker` (a failure more than ``block_time`` after
  the previous one starts a new count; ``max_failures`` of them block until ``block_time``
  after the last), with the time passed in by the caller, so that the rules can be
  tested with a clock of the test's choosing. Counting is one script (atomic), the
  blocked check one HMGET.

Round trips per request: a login 2 (blocked check, accept), a failure 2 (blocked check,
count). No key is ever scanned; memory is bounded by what expires.

Redis unreachable (refused, timed out, reset): every call raises
:class:`~sipsilo.auth.shared.StateUnavailable` after at most ``timeout`` seconds and one
retry on a fresh connection, and the authenticator fails closed. The outage is logged
once when it starts and once when Redis answers again, never per request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from sipsilo.auth.nonce import MAX_SKEW
from sipsilo.auth.shared import StateUnavailable

log = logging.getLogger("sipsilo.auth")

T = TypeVar("T")

# KEYS[1] the nonce's record, KEYS[2] the failure entry to forget on success;
# ARGV[1] nc (-1: no qop), ARGV[2] account, ARGV[3] time to live (ms).
_ACCEPT = """
local cur = redis.call('GET', KEYS[1])
local nc = tonumber(ARGV[1])
if cur then
  local sp = string.find(cur, ' ', 1, true)
  local prev = tonumber(string.sub(cur, 1, sp - 1))
  if nc < 0 or prev < 0 or nc <= prev or string.sub(cur, sp + 1) ~= ARGV[2] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS[1] the failure entry; ARGV[1] now, ARGV[2] block_time (s). Returns the count.
_FAILURE = """
local v = redis.call('HMGET', KEYS[1], 'n', 't')
local n = tonumber(v[1]) or 0
local now = tonumber(ARGV[1])
if v[2] and now - tonumber(v[2]) >= tonumber(ARGV[2]) then n = 0 end
n = n + 1
redis.call('HSET', KEYS[1], 'n', n, 't', ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return n
"""


def connect(url: str, timeout: float = 0.5) -> aioredis.Redis:
    """A client for *url* that gives up fast: a request waits at most about
    2 × *timeout* for a Redis that is down, never the library's default backoff."""
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1), health_check_interval=30)


class RedisState:
    """:class:`~sipsilo.auth.shared.AuthState` in Redis."""

    def __init__(self, client: aioredis.Redis, prefix: str, *, nonce_expires: int,
                 max_failures: int, block_time: float, where: str = "redis") -> None:
        self._redis = client
        self._prefix = prefix
        self._nonce_expires = nonce_expires
        self._max = max_failures
        self._block = block_time
        self._where = where  # for the log line: the URL without its password
        self._accept = client.register_script(_ACCEPT)
        self._failure = client.register_script(_FAILURE)
        self.down = False

    async def ping(self) -> None:
        """Raise :class:`StateUnavailable` (one line) unless Redis answers."""
        await self._call(self._redis.ping)

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await fn()
        except (RedisError, OSError, TimeoutError) as exc:
            if not self.down:
                self.down = True
                log.warning("shared authentication state unavailable (%s: %s); nobody can "
                            "log in until it answers again", self._where,
                            str(exc) or type(exc).__name__)
            raise StateUnavailable(f"{self._where}: {exc}") from None
        if self.down:
            self.down = False
            log.warning("shared authentication state reachable again (%s)", self._where)
        return result

    async def blocked_until(self, key: str, now: float) -> float | None:
        if not self._max:
            return None
        name = self._prefix + "fail:" + key

        def hmget() -> Awaitable[list[Any]]:
            return self._redis.hmget(name, ["n", "t"])

        n, t = await self._call(hmget)
        if n is None or t is None:
            return None
        last = float(t)
        if now - last >= self._block or int(n) < self._max:
            return None
        return last + self._block

    async def failure(self, key: str, now: float) -> bool:
        if not self._max:
            return False
        name = self._prefix + "fail:" + key

        def count() -> Awaitable[Any]:
            return self._failure(keys=[name], args=[repr(now), repr(float(self._block))])

        return int(await self._call(count)) >= self._max

    async def accept(self, nonce: str, issued_at: int, nc: int | None, account: str,
                     key: str, now: float) -> bool:
        # Kept while any instance could still take the nonce as VALID.
        ttl_ms = max(1000, int((issued_at + self._nonce_expires + MAX_SKEW - now + 1) * 1000))
        names = [self._prefix + "nonce:" + nonce, self._prefix + "fail:" + key]

        def run() -> Awaitable[Any]:
            return self._accept(keys=names, args=[-1 if nc is None else nc, account, ttl_ms])

        return int(await self._call(run)) == 1

    async def aclose(self) -> None:
        await self._redis.aclose()

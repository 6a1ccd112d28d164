"""The replay and failure rules, the same in every home of the state (this process's
memory, Redis), with the clock passed in: no test waits for time to pass.

The Redis cases run against the Redis on 127.0.0.1:6379 under a key prefix of their
own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

from sipsilo.auth.nonce import NonceManager
from sipsilo.auth.policy import FailureTracker
from sipsilo.auth.shared import AuthState, LocalState, StateUnavailable

SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_000_000.0
KEY = "192.0.2.7 sip:bob@example.com"


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


Factory = Callable[[int, float], Awaitable[AuthState]]
Body = Callable[[Factory], Awaitable[None]]
Home = Callable[[Body], None]


@pytest.fixture(params=["local", "redis"])
def home(request: pytest.FixtureRequest) -> Iterator[Callable[[Body], None]]:
    """Runs a test body with a factory of states of one home (in a loop of its own)."""
    kind = request.param
    prefix = f"sipsilo-test-{uuid.uuid4().hex[:12]}:"
    if kind == "redis" and not _redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")

    def go(body: Body) -> None:
        async def main() -> None:
            made: list[AuthState] = []

            async def make(max_failures: int = 3, block_time: float = 60) -> AuthState:
                state: AuthState
                if kind == "local":
                    state = LocalState(NonceManager(SECRET, "r", expires=300),
                                       FailureTracker(max_failures, block_time))
                else:
                    from sipsilo.auth.redis_state import RedisState, connect
                    state = RedisState(connect("redis://127.0.0.1:6379/0"), prefix,
                                       nonce_expires=300, max_failures=max_failures,
                                       block_time=block_time)
                made.append(state)
                return state

            try:
                await body(make)
            finally:
                for state in made:
                    await state.aclose()

        asyncio.run(main())

    yield go
    if kind == "redis":
        import redis
        client = redis.Redis(host="127.0.0.1", port=6379)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def nonce() -> tuple[str, int]:
    nm = NonceManager(SECRET, "r")
    return nm.issue(T0), int(T0)


def test_nc_must_increase_and_the_account_stay(home: Home, nonce: tuple[str, int]) -> None:
    async def body(make_state: Factory) -> None:
        s = await make_state(3, 60)
        n, ts = nonce
        assert await s.accept(n, ts, 1, "sip:bob@r", KEY, T0)
        assert not await s.accept(n, ts, 1, "sip:bob@r", KEY, T0 + 1)      # replay
        assert await s.accept(n, ts, 2, "sip:bob@r", KEY, T0 + 2)
        assert not await s.accept(n, ts, 3, "sip:alice@r", KEY, T0 + 3)    # another account
        assert await s.accept(n, ts, 3, "sip:bob@r", KEY, T0 + 3)

    home(body)


def test_a_nonce_without_qop_is_single_use(home: Home, nonce: tuple[str, int]) -> None:
    async def body(make_state: Factory) -> None:
        s = await make_state(3, 60)
        n, ts = nonce
        assert await s.accept(n, ts, None, "sip:bob@r", KEY, T0)
        assert not await s.accept(n, ts, None, "sip:bob@r", KEY, T0)
        assert not await s.accept(n, ts, 99, "sip:bob@r", KEY, T0)

    home(body)


def test_two_processes_share_one_record(home: Home, nonce: tuple[str, int]) -> None:
    async def body(make_state: Factory) -> None:
        a, b = await make_state(3, 60), await make_state(3, 60)
        if isinstance(a, LocalState):
            pytest.skip("two LocalStates are two processes' memories: nothing shared")
        n, ts = nonce
        assert await a.accept(n, ts, 1, "sip:bob@r", KEY, T0)
        assert not await b.accept(n, ts, 1, "sip:bob@r", KEY, T0)
        # racing on one nonce-count: exactly one of them wins it
        results = await asyncio.gather(*(s.accept(n, ts, 2, "sip:bob@r", KEY, T0)
                                         for s in (a, b) * 10))
        assert sum(results) == 1
        assert not await a.failure(KEY, T0) and not await b.failure(KEY, T0 + 1)
        assert await a.failure(KEY, T0 + 2)                       # 3 failures over two
        assert await b.blocked_until(KEY, T0 + 3) == T0 + 62

    home(body)


def test_failures_block_then_quiet_forgives(home: Home) -> None:
    async def body(make_state: Factory) -> None:
        s = await make_state(3, 60)
        assert await s.blocked_until(KEY, T0) is None
        assert not await s.failure(KEY, T0)
        assert not await s.failure(KEY, T0 + 10)
        assert await s.blocked_until(KEY, T0 + 11) is None
        assert await s.failure(KEY, T0 + 20)
        assert await s.blocked_until(KEY, T0 + 21) == T0 + 80     # block_time after the last
        assert await s.blocked_until(KEY, T0 + 79.9) == T0 + 80
        assert await s.blocked_until(KEY, T0 + 80) is None        # and it ends on time
        assert await s.blocked_until("192.0.2.8 sip:bob@example.com", T0 + 21) is None
        # a failure after block_time of quiet starts a new count
        assert not await s.failure(KEY, T0 + 200)
        assert await s.blocked_until(KEY, T0 + 201) is None

    home(body)


def test_a_login_forgets_the_failures(home: Home, nonce: tuple[str, int]) -> None:
    async def body(make_state: Factory) -> None:
        s = await make_state(2, 60)
        n, ts = nonce
        assert not await s.failure(KEY, T0)
        assert await s.accept(n, ts, 1, "sip:bob@r", KEY, T0 + 1)
        assert not await s.failure(KEY, T0 + 2)                   # counting from 0 again
        assert await s.blocked_until(KEY, T0 + 3) is None
        # a replay does not forget them
        assert await s.failure(KEY, T0 + 4)
        assert not await s.accept(n, ts, 1, "sip:bob@r", KEY, T0 + 5)
        assert await s.blocked_until(KEY, T0 + 6) == T0 + 64

    home(body)


def test_zero_max_failures_never_blocks(home: Home) -> None:
    async def body(make_state: Factory) -> None:
        s = await make_state(0, 60)
        assert not any([await s.failure(KEY, T0 + i) for i in range(10)])
        assert await s.blocked_until(KEY, T0 + 10) is None

    home(body)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_down_raises_unavailable_and_logs_once(
        caplog: pytest.LogCaptureFixture, nonce: tuple[str, int]) -> None:
    asyncio.run(_redis_down(caplog, nonce))


async def _redis_down(caplog: pytest.LogCaptureFixture, nonce: tuple[str, int]) -> None:
    pytest.importorskip("redis")
    from sipsilo.auth.redis_state import RedisState, connect

    url = f"redis://127.0.0.1:{_closed_port()}/0"
    s = RedisState(connect(url), "x:", nonce_expires=300, max_failures=3, block_time=60,
                   where=url)
    n, ts = nonce
    with caplog.at_level(logging.WARNING, logger="sipsilo.auth"):
        for _ in range(3):
            with pytest.raises(StateUnavailable):
                await s.accept(n, ts, 1, "sip:bob@r", KEY, T0)
            with pytest.raises(StateUnavailable):
                await s.blocked_until(KEY, T0)
            with pytest.raises(StateUnavailable):
                await s.failure(KEY, T0)
    lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(lines) == 1 and url in lines[0].getMessage() and lines[0].exc_info is None
    await s.aclose()

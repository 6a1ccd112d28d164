#!/usr/bin/env python3
"""What the shared authentication state costs per authenticated request, per home.

    python3 scripts/bench_auth_state.py [--n 5000]

A login asks the state twice (is the address+account blocked? accept this nonce-count
and forget the failures), a failure twice too (blocked? count it). This times those two
questions, back to back, against each home the state could have on this machine:

* this process's memory (one process without Redis);
* the supervisor's memory over a worker link (a SEQPACKET socket pair to a second
  process, as ``[server] workers`` > 1 without Redis);
* Redis on 127.0.0.1:6379 (``[cluster] redis_url``), under a key prefix of its own,
  deleted after;
* PostgreSQL on 127.0.0.1:5432 (db ``test``) and MariaDB on 127.0.0.1:3306 (db
  ``test``), with the same two questions as SQL on tables of their own, dropped after:
  what the database would cost if it held the state instead.

Loopback only; a bounded number of iterations. Prints microseconds per login (median of
five runs of --n logins each) and round trips per login.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sipsilo.auth.nonce import NonceManager  # noqa: E402
from sipsilo.auth.policy import FailureTracker  # noqa: E402
from sipsilo.auth.shared import AuthState, LocalState  # noqa: E402
from sipsilo.transport import worker_link as wl  # noqa: E402
from sipsilo.workers.auth_link import AuthTable, LinkState  # noqa: E402

SECRET = secrets.token_hex(32).encode()
Login = Callable[[int], Awaitable[None]]


class Nonces:
    """Fresh nonces made before the clock starts: only the state's cost is timed."""

    def __init__(self, n: int) -> None:
        nm = NonceManager(SECRET, "r")
        self.now = time.time()
        self._left = [nm.issue(self.now) for _ in range(6 * n + 200)]

    def take(self) -> str:
        return self._left.pop()


def state_login(state: AuthState, nonces: Nonces) -> Login:
    async def login(i: int) -> None:
        now = nonces.now
        key = f"127.0.0.1 sip:u{i % 100}@example.com"
        await state.blocked_until(key, now)
        assert await state.accept(nonces.take(), int(now), 1, f"sip:u{i % 100}@example.com",
                                  key, now)

    return login


async def measure(login: Login, n: int) -> float:
    for i in range(min(200, n)):  # warm up: connections, scripts loaded
        await login(i)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(n):
            await login(i)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def supervisor_child(sock: socket.socket) -> None:
    """The supervisor's end in a process of its own: Supervisor._from_worker's Q branch."""
    async def main() -> None:
        table = AuthTable(SECRET, "r", nonce_expires=300, max_failures=5, block_time=60)
        reliable = wl.ReliableFrames(sock)
        done = asyncio.get_running_loop().create_future()
        wl.tune(sock)

        def readable() -> None:
            for _ in range(64):
                try:
                    frame = sock.recv(wl.MAX_FRAME)
                except BlockingIOError:
                    return
                if not frame:
                    if not done.done():
                        done.set_result(None)
                    return
                if frame[0] == wl.QUESTION:
                    reliable.send(bytes((wl.ANSWER,)) + frame[1:5] + table.answer(frame[5:]))

        asyncio.get_running_loop().add_reader(sock.fileno(), readable)
        await done

    asyncio.run(main())


async def bench_link(n: int) -> float:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        ours.close()
        try:
            supervisor_child(theirs)
        finally:
            os._exit(0)
    theirs.close()
    link = wl.WorkerLink(ours, lambda: None)
    link.start([])
    try:
        return await measure(state_login(LinkState(link), Nonces(n)), n)
    finally:
        link.close()
        ours.close()
        os.waitpid(pid, 0)


async def bench_redis(n: int) -> float:
    from sipsilo.auth.redis_state import RedisState, connect

    prefix = f"sipsilo-bench-{uuid.uuid4().hex[:12]}:"
    state = RedisState(connect("redis://127.0.0.1:6379/0"), prefix, nonce_expires=300,
                       max_failures=5, block_time=60)
    try:
        return await measure(state_login(state, Nonces(n)), n)
    finally:
        client = connect("redis://127.0.0.1:6379/0")
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i:i + 1000])
        await client.aclose()
        await state.aclose()


async def bench_postgres(n: int) -> float:
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    t = f"bench_{uuid.uuid4().hex[:10]}"
    await conn.execute(f"CREATE TABLE {t}_n (nonce TEXT PRIMARY KEY, nc BIGINT, account TEXT,"
                       f" expires DOUBLE PRECISION)")
    await conn.execute(f"CREATE TABLE {t}_f (key TEXT PRIMARY KEY, n INT, t DOUBLE PRECISION)")
    blocked = await conn.prepare(f"SELECT n, t FROM {t}_f WHERE key = $1")
    accept = await conn.prepare(
        f"WITH up AS (INSERT INTO {t}_n VALUES ($1, $2, $3, $4) ON CONFLICT (nonce) DO UPDATE"
        f" SET nc = EXCLUDED.nc WHERE {t}_n.nc >= 0 AND {t}_n.nc < EXCLUDED.nc"
        f" AND {t}_n.account = EXCLUDED.account RETURNING 1),"
        f" del AS (DELETE FROM {t}_f WHERE key = $5 AND EXISTS (SELECT 1 FROM up))"
        f" SELECT count(*) FROM up")
    nonces = Nonces(n)

    async def login(i: int) -> None:
        now = nonces.now
        key = f"127.0.0.1 sip:u{i % 100}@example.com"
        await blocked.fetchrow(key)
        assert await accept.fetchval(nonces.take(), 1, key[10:], now + 330, key) == 1

    try:
        return await measure(login, n)
    finally:
        await conn.execute(f"DROP TABLE {t}_n, {t}_f")
        await conn.close()


async def bench_mariadb(n: int) -> float:
    import asyncmy

    conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", db="test",
                                 autocommit=True)
    t = f"bench_{uuid.uuid4().hex[:10]}"
    cur = conn.cursor()
    await cur.execute(f"CREATE TABLE {t}_n (nonce VARCHAR(64) PRIMARY KEY, nc BIGINT,"
                      f" account VARCHAR(255), expires DOUBLE) ENGINE=InnoDB")
    await cur.execute(f"CREATE TABLE {t}_f (k VARCHAR(300) PRIMARY KEY, n INT, t DOUBLE)"
                      f" ENGINE=InnoDB")
    nonces = Nonces(n)

    async def login(i: int) -> None:
        now = nonces.now
        key = f"127.0.0.1 sip:u{i % 100}@example.com"
        await cur.execute(f"SELECT n, t FROM {t}_f WHERE k = %s", (key,))
        await cur.fetchall()
        # 1 row affected: inserted; 2: a higher nc of the same account; 0: a replay.
        # The failure entry is forgotten in a second statement (MariaDB has no CTE DML).
        rows = await cur.execute(
            f"INSERT INTO {t}_n VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
            f" nc = IF(nc >= 0 AND nc < VALUES(nc) AND account = VALUES(account),"
            f" VALUES(nc), nc)", (nonces.take(), 1, key[10:], now + 330))
        assert rows == 1
        await cur.execute(f"DELETE FROM {t}_f WHERE k = %s", (key,))

    try:
        return await measure(login, n)
    finally:
        await cur.execute(f"DROP TABLE {t}_n, {t}_f")
        await cur.close()
        conn.close()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="logins per run (5 runs)")
    n = ap.parse_args().n
    local = LocalState(NonceManager(SECRET, "r"), FailureTracker(5, 60))
    rows = [("this process (no Redis, one process)", 0,
             await measure(state_login(local, Nonces(n)), n))]
    homes: list[tuple[str, int, Callable[[int], Awaitable[float]]]] = [
        ("supervisor over the worker link (workers > 1, no Redis)", 2, bench_link),
        ("Redis 127.0.0.1:6379 (`[cluster] redis_url`)", 2, bench_redis),
        ("PostgreSQL 127.0.0.1:5432 (for comparison)", 2, bench_postgres),
        ("MariaDB 127.0.0.1:3306 (for comparison)", 3, bench_mariadb),
    ]
    for name, trips, fn in homes:
        try:
            rows.append((name, trips, await fn(n)))
        except Exception as exc:  # a server that is not running: say so, go on
            print(f"{name}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
    print("| state held by | round trips per login | µs per login |")
    print("| --- | --- | --- |")
    for name, trips, us in rows:
        print(f"| {name} | {trips} | {us:,.0f} |" if us >= 10 else
              f"| {name} | {trips} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

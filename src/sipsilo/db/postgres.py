"""PostgreSQL through asyncpg: the pool and the connection adapter.

asyncpg's own pool is used: it replaces a connection that broke (server restart,
network cut) when it is released, and connects lazily up to ``max_size``, so the
store recovers by itself once the server is back.  Statements are written with
``%s`` (as for MySQL) and rewritten to ``$1, $2 ...`` once per distinct text.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Sequence
from functools import lru_cache
from typing import Any

import asyncpg

from .base import STATEMENTS, Conn, Pool, Row, is_connection_error, reason
from .errors import StoreConflict, StoreError, StoreUnavailable
from .url import DbUrl, SqlDialect


@lru_cache(maxsize=512)
def to_dollar(sql: str) -> str:
    """``%s`` placeholders -> ``$n`` (our SQL never has a literal ``%``)."""
    parts = sql.split("%s")
    out = [parts[0]]
    for i, part in enumerate(parts[1:], 1):
        out.append(f"${i}{part}")
    return "".join(out)


def _lock_key(name: str) -> int:
    # pg_advisory_lock takes a bigint; a stable 32-bit hash of the name is plenty.
    return zlib.crc32(name.encode())


def _wrap(exc: BaseException, url: DbUrl) -> StoreError:
    if is_connection_error(exc) or isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError,
    ):
        err: StoreError = StoreUnavailable(f"postgresql {url.host}:{url.port}: {reason(exc)}")
    else:
        err = StoreError(f"postgresql: {exc}")
    err.__cause__ = exc
    return err


class _PgConn(Conn):
    dialect: SqlDialect = "postgresql"
    returning = True

    def __init__(self, conn: Any, url: DbUrl) -> None:
        self._c = conn
        self._url = url
        self.broken = False

    async def _do(self, coro: Any) -> Any:
        STATEMENTS.n += 1
        try:
            return await coro
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as e:
            err = _wrap(e, self._url)
            if isinstance(err, StoreUnavailable):
                self.broken = True
            if isinstance(e, asyncpg.DeadlockDetectedError | asyncpg.SerializationError):
                raise StoreConflict(str(e)) from e  # run_txn re-runs the transaction
            raise err from e

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        status = await self._do(self._c.execute(to_dollar(sql), *args))
        # "UPDATE 3", "DELETE 0", "INSERT 0 1": the count is the last word.
        tail = str(status).rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        rows = await self._do(self._c.fetch(to_dollar(sql), *args))
        return [tuple(r) for r in rows]

    async def insert(self, sql: str, args: Sequence[Any]) -> int:
        return int(await self._do(self._c.fetchval(to_dollar(sql) + " RETURNING id", *args)))

    async def _insert_rows(self, sql: str, args: Sequence[Any], n: int) -> list[int]:
        # RETURNING gives the ids in VALUES order.
        rows_back = await self._do(self._c.fetch(to_dollar(sql) + " RETURNING id", *args))
        return [int(r[0]) for r in rows_back]

    async def _insert_new_rows(self, sql: str, args: Sequence[Any],
                               rows: Sequence[Sequence[Any]], key: str, key_at: int
                               ) -> list[int | None]:
        back = await self._do(self._c.fetch(
            to_dollar(sql) + f" ON CONFLICT ({key}) DO NOTHING RETURNING id, {key}", *args))
        # RETURNING lists the inserted rows in VALUES order. A keyed row was inserted
        # if its key came back and no earlier row of these took it first; rows with
        # no key are always inserted, and take the key-less ids in order.
        by_key = {k: int(i) for i, k in back if k is not None}
        keyless = iter([int(i) for i, k in back if k is None])
        out: list[int | None] = []
        for values in rows:
            k = values[key_at]
            out.append(next(keyless) if k is None else by_key.pop(k, None))
        return out

    async def lock(self, name: str) -> None:
        await self.execute("SELECT pg_advisory_lock(%s)", (_lock_key(name),))

    async def unlock(self, name: str) -> None:
        await self.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(name),))


class PostgresPool(Pool):
    dialect: SqlDialect = "postgresql"

    def __init__(self, url: DbUrl, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max(1, max_size, min_size)
        self._pool: Any = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        u = self.url
        try:
            self._pool = await asyncpg.create_pool(
                host=u.host,
                port=u.port,
                user=u.user or "postgres",
                password=u.password,
                database=u.database,
                min_size=self.min_size,
                max_size=self.max_size,
                timeout=u.connect_timeout,
                # Statements are prepared per connection and cached by asyncpg.
                command_timeout=60,
            )
            if self.min_size == 0:  # nothing connected yet: prove the URL works now
                async with self._pool.acquire() as c:
                    await c.execute("SELECT 1")
        except Exception as e:
            self._pool = None
            raise StoreUnavailable(f"cannot connect to {u.masked}: {reason(e)}") from e

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.close()
            except Exception:
                pool.terminate()

    def usage(self) -> tuple[int, int, int] | None:
        pool = self._pool
        if pool is None:
            return None
        size = int(pool.get_size())
        return size, size - int(pool.get_idle_size()), self.max_size

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        if self._pool is None:
            raise StoreUnavailable("database is closed")
        try:
            raw = await self._pool.acquire(timeout=self.url.connect_timeout)
        except Exception as e:
            raise StoreUnavailable(
                f"cannot connect to {self.url.masked}: {reason(e)}"
            ) from e
        conn = _PgConn(raw, self.url)
        try:
            yield conn
        finally:
            if conn.broken:
                # Do not hand a dead socket to the next caller; the pool reconnects.
                raw.terminate()
            with contextlib.suppress(Exception):
                await self._pool.release(raw)

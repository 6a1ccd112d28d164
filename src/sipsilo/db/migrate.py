"""Running the schema code (:mod:`.schema`, and the subscriber table's) on a pool.

The migration runner (:func:`sipsilo.db.schema.migrate`) is synchronous DB-API code, so
that ONE runner serves a plain ``sqlite3`` connection and the async drivers alike.  On a
pool it runs in a worker thread over :class:`SyncCursor`, whose every statement is
executed on the event loop's async connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .base import Conn, Pool, Row
from .errors import StoreError
from .schema import MigrationContext, check_identifier, current_version, migrate

T = TypeVar("T")

#: Statements whose rows the caller reads.
_ROWS = ("SELECT", "PRAGMA")


class SyncCursor:
    """A DB-API-looking cursor, used from a worker thread, on an async :class:`Conn`."""

    def __init__(self, conn: Conn, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._loop = loop
        self._rows: list[Row] = []

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> None:
        head = sql.lstrip()[:6].upper()
        coro = (
            self._conn.fetch(sql, tuple(params))
            if head in _ROWS
            else self._conn.execute(sql, tuple(params))
        )
        result = asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        self._rows = list(result) if isinstance(result, list) else []

    def fetchone(self) -> Row | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Row]:
        rows, self._rows = self._rows, []
        return rows


class SyncConn:
    """``conn.cursor()`` for :func:`~sipsilo.db.schema.migrate`."""

    def __init__(self, conn: Conn, loop: asyncio.AbstractEventLoop) -> None:
        self._cur = SyncCursor(conn, loop)

    def cursor(self) -> SyncCursor:
        return self._cur


async def migrate_pool(pool: Pool, table: str) -> tuple[int, int]:
    """Create/upgrade the message table *table* on *pool*'s database; return
    (version before, after).

    A named server lock (GET_LOCK / pg_advisory_lock) serialises instances starting
    together: MySQL commits DDL implicitly, and two PostgreSQL ``CREATE TABLE IF NOT
    EXISTS`` at once can still collide on the catalog.
    """
    check_identifier(table)
    async with pool.acquire() as conn:
        name = f"sipsilo_migrate_{table}"
        await conn.lock(name)
        try:
            loop = asyncio.get_running_loop()
            return await asyncio.to_thread(migrate, SyncConn(conn, loop), pool.dialect, table)
        finally:
            with contextlib.suppress(StoreError):
                await conn.unlock(name)


async def schema_version(pool: Pool, table: str) -> int:
    """Our schema version of the message table *table* (0: never created)."""
    async with pool.acquire() as conn:
        cur = SyncCursor(conn, asyncio.get_running_loop())
        return await asyncio.to_thread(current_version, cur, pool.dialect, table)


async def ensure_in_txn(pool: Pool, table: str, apply: Callable[[MigrationContext], None]
                        ) -> None:
    """Run *apply* (re-runnable DDL for *table*) in one transaction under a named lock.

    MySQL commits DDL implicitly, so *apply* must be safe to run again after a crash."""
    loop = asyncio.get_running_loop()
    async with pool.acquire() as conn:
        name = f"sipsilo_ddl_{table}"
        await conn.lock(name)
        try:
            await conn.begin()
            try:
                ctx = MigrationContext(SyncCursor(conn, loop), pool.dialect, table)
                await asyncio.to_thread(apply, ctx)
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                raise
            await conn.commit()
        finally:
            with contextlib.suppress(StoreError):
                await conn.unlock(name)


__all__ = ["SyncConn", "SyncCursor", "ensure_in_txn", "migrate_pool", "schema_version"]

"""The driver layer under every SQL store: the message store, the subscribers, the
location service.

Every backend is reached through the same two small async interfaces: a :class:`Pool`
hands out :class:`Conn` objects, a ``Conn`` runs SQL written with ``%s`` placeholders
(each driver rewrites them: ``$1`` for asyncpg, ``?`` for sqlite3) and reports driver
failures as :class:`~sipsilo.db.errors.StoreError`.  The drivers are used raw (asyncmy,
asyncpg, sqlite3), no ORM: every statement on the delivery path is a single indexed
statement, and the drivers' own pools already reconnect.

Deadlocks and serialisation failures are not errors for the caller: :func:`run_txn`
re-runs the whole transaction (each of our transactions is safe to re-run).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as errno_mod
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .errors import StoreConflict
from .url import DbUrl, SqlDialect

T = TypeVar("T")
Row = Sequence[Any]

#: How many times a transaction that lost a deadlock is re-run before giving up.
DEADLOCK_RETRIES = 5


def reason(exc: BaseException) -> str:
    """A short human reason for a connection failure: "Connection refused", not a repr."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc.args[-1] if exc.args else exc) or type(exc).__name__
    # asyncmy wraps socket errors: "Can't connect to MySQL server on ... ([Errno 111] ...)".
    m = re.search(r"\[Errno (\d+)\]", text)
    if m:
        return os.strerror(int(m.group(1)))
    return text


# --------------------------------------------------------------------------- interfaces


def multi_row(prefix: str, row: str, rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """One ``INSERT ... VALUES (..), (..)`` statement and its flat arguments."""
    return prefix + ", ".join([row] * len(rows)), [a for r in rows for a in r]


class StatementCount:
    """Statements this process has sent to a server database (PostgreSQL,
    MySQL/MariaDB), every pool together: the database load per stored and per
    delivered message that capacity planning needs (docs/scaling.md), exposed as
    ``sipsilo_db_statements_total``. A plain integer, bumped on the request path;
    SQLite, in-process, is not counted."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


STATEMENTS = StatementCount()


class Conn(ABC):
    """One connection, in autocommit mode unless inside ``begin()``/``commit()``."""

    dialect: SqlDialect
    #: ``UPDATE ... RETURNING`` is available (PostgreSQL, SQLite >= 3.35).
    returning: bool = False

    @abstractmethod
    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a statement; return the affected row count."""

    @abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    @abstractmethod
    async def insert(self, sql: str, args: Sequence[Any]) -> int:
        """Run an INSERT into a table whose key is ``id``; return the new id."""

    async def insert_many(
        self, prefix: str, row: str, rows: Sequence[Sequence[Any]]
    ) -> list[int]:
        """``prefix`` + ``row`` for each of *rows* (``INSERT ... VALUES`` + ``(%s, ...)``);
        the new ids in order.  A server gets one multi-row INSERT (one round trip);
        SQLite, in-process, inserts row by row."""
        if self.dialect == "sqlite":
            return [await self.insert(prefix + row, args) for args in rows]
        if not rows:
            return []
        sql, args = multi_row(prefix, row, rows)
        return await self._insert_rows(sql, args, len(rows))

    async def _insert_rows(self, sql: str, args: Sequence[Any], n: int) -> list[int]:
        """Run one INSERT of *n* rows; their ids in VALUES order."""
        raise NotImplementedError

    async def insert_new(
        self, prefix: str, row: str, rows: Sequence[Sequence[Any]], key: str, key_at: int
    ) -> list[int | None]:
        """Insert each of *rows* unless its unique *key* column is stored already (or
        repeats an earlier row of *rows*); for each, its new id or None.

        The store's idempotency look-up folded into its INSERT: one statement per
        message instead of a SELECT and an INSERT. SQLite and PostgreSQL skip the taken
        keys (``ON CONFLICT DO NOTHING``); MySQL cannot skip only those (``INSERT IGNORE``
        would hide other errors too), so it inserts plainly and raises
        :class:`~.errors.StoreDuplicate` when a key is taken: the caller, still in its
        transaction, looks the keys up first then."""
        if self.dialect == "sqlite":  # in-process: row by row
            tail = f" ON CONFLICT ({key}) DO NOTHING"
            return [await self._insert_if_new(prefix + row + tail, args) for args in rows]
        if not rows:
            return []
        sql, args = multi_row(prefix, row, rows)
        return await self._insert_new_rows(sql, args, rows, key, key_at)

    async def _insert_new_rows(self, sql: str, args: Sequence[Any],
                               rows: Sequence[Sequence[Any]], key: str, key_at: int
                               ) -> list[int | None]:
        """:meth:`insert_new` on a server, as one statement; this default inserts
        plainly (a taken key raises StoreDuplicate: MySQL)."""
        return list(await self._insert_rows(sql, args, len(rows)))

    async def _insert_if_new(self, sql: str, args: Sequence[Any]) -> int | None:
        """SQLite: run an INSERT ... DO NOTHING; the new id, or None if nothing was
        inserted."""
        raise NotImplementedError

    async def begin(self) -> None:
        await self.execute("BEGIN")

    async def commit(self) -> None:
        await self.execute("COMMIT")

    async def rollback(self) -> None:
        await self.execute("ROLLBACK")

    async def lock(self, name: str) -> None:  # noqa: B027 -- SQLite locks the file itself
        """Take a session-wide named lock (serialises migrations across processes)."""

    async def unlock(self, name: str) -> None:  # noqa: B027
        """Release :meth:`lock`."""


class Pool(ABC):
    dialect: SqlDialect
    url: DbUrl

    @abstractmethod
    async def open(self) -> None:
        """Connect (the pool's minimum); raise StoreUnavailable with one clear line."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def acquire(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        """A connection; a broken one is discarded on the way back, never reused."""

    def usage(self) -> tuple[int, int, int] | None:
        """(connections open, of them in use, the pool's maximum) for metrics; None: no pool."""
        return None


async def run_txn(pool: Pool, fn: Callable[[Conn], Awaitable[T]], *, txn: bool = True) -> T:
    """Run *fn* on a pooled connection, in one transaction if *txn*; re-run on deadlock."""
    for attempt in range(DEADLOCK_RETRIES + 1):
        async with pool.acquire() as conn:
            if not txn:
                try:
                    return await fn(conn)
                except StoreConflict:
                    if attempt < DEADLOCK_RETRIES:
                        continue
                    raise
            await conn.begin()
            try:
                result = await fn(conn)
                await conn.commit()
                return result
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                if attempt < DEADLOCK_RETRIES and isinstance(exc, StoreConflict):
                    continue
                raise
    raise AssertionError("unreachable")


def open_pool(url: DbUrl, min_size: int = 1, max_size: int = 10) -> Pool:
    """The pool for *url* (not opened).  Drivers are imported only when used."""
    if url.dialect == "mysql":
        from .mysql import MysqlPool

        return MysqlPool(url, min_size, max_size)
    if url.dialect == "postgresql":
        from .postgres import PostgresPool

        return PostgresPool(url, min_size, max_size)
    from .sqlite import SqlitePool

    return SqlitePool(url)


def is_connection_error(exc: BaseException) -> bool:
    """Socket-level trouble (refused, reset, broken pipe, timeout)."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError | EOFError):
        return True
    return isinstance(exc, OSError) and exc.errno in (
        errno_mod.ECONNREFUSED,
        errno_mod.ECONNRESET,
        errno_mod.EPIPE,
        errno_mod.ETIMEDOUT,
        errno_mod.EHOSTUNREACH,
        errno_mod.ENETUNREACH,
    )


__all__ = [
    "Conn",
    "Pool",
    "Row",
    "is_connection_error",
    "multi_row",
    "open_pool",
    "reason",
    "run_txn",
]

"""Database access shared by the SQL message stores and the SQL location service.

Every backend is reached through the same two small async interfaces: a :class:`Pool`
hands out :class:`Conn` objects, a ``Conn`` runs SQL written with ``%s`` placeholders
(each driver rewrites them: ``$1`` for asyncpg, ``?`` for sqlite3) and reports driver
failures as :class:`StoreError`.  The drivers are used raw (asyncmy, asyncpg, sqlite3),
no ORM: every statement on the delivery path is a single indexed statement, and the
drivers' own pools already reconnect.

Errors are split in two, because callers treat them differently:

* :class:`StoreUnavailable`: the database cannot be reached (refused, lost connection,
  wrong password at runtime...).  Nothing is retried on another row; the route answers
  503 and the next operation tries a fresh connection, so the store heals by itself.
* plain :class:`StoreError`: the statement itself failed (data too long...).

Deadlocks and serialisation failures are not errors for the caller: :func:`run_txn`
re-runs the whole transaction (each of our transactions is safe to re-run).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as errno_mod
import os
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from sipsilo.config_values import mask_url

from .store import StoreConfigError, StoreError

T = TypeVar("T")
SqlDialect = Literal["sqlite", "mysql", "postgresql"]
Row = Sequence[Any]

_SCHEMES: dict[str, SqlDialect] = {
    "mysql": "mysql",
    "mysql+asyncmy": "mysql",
    "mariadb": "mysql",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "postgresql+asyncpg": "postgresql",
}
_DEFAULT_PORT = {"mysql": 3306, "postgresql": 5432}
#: How many times a transaction that lost a deadlock is re-run before giving up.
DEADLOCK_RETRIES = 5


class StoreUnavailable(StoreError):
    """The database cannot be reached; a later call may succeed (pool reconnect)."""


class StoreConflict(StoreError):
    """Deadlock, serialisation failure or lock wait timeout: the transaction may be re-run."""


@dataclass(frozen=True)
class SqlUrl:
    """A parsed ``db_url``.  For sqlite only ``path`` is set."""

    dialect: SqlDialect
    raw: str
    host: str = ""
    port: int = 0
    user: str | None = None
    password: str | None = None
    database: str = ""
    path: str = ""
    connect_timeout: float = 10.0
    options: dict[str, str] = field(default_factory=dict)

    @property
    def masked(self) -> str:
        return mask_url(self.raw)


def dialect_of(db_url: str) -> SqlDialect | None:
    """The dialect of *db_url*'s scheme (None if the scheme is unknown)."""
    scheme = db_url.partition("://")[0].lower()
    if scheme.split("+", 1)[0] == "sqlite":
        return "sqlite"
    return _SCHEMES.get(scheme)


def parse_sql_url(db_url: str, data_dir: str | Path | None = None) -> SqlUrl:
    """``mysql[+asyncmy]://user:pass@host[:port]/db``, ``postgres[ql]://...``, or
    ``sqlite:///relative`` / ``sqlite:////absolute``.  User and password may carry URL
    escapes (``p%40ss`` is ``p@ss``).  Option: ``?connect_timeout=SECONDS``."""
    dialect = dialect_of(db_url)
    if dialect is None or "://" not in db_url:
        raise StoreConfigError(
            f"unsupported db_url {mask_url(db_url)!r}: expected sqlite:///path, "
            "mysql://user:pass@host[:port]/db or postgresql://user:pass@host[:port]/db"
        )
    if dialect == "sqlite":
        rest = db_url.partition("://")[2].split("?", 1)[0]
        path = rest[1:] if rest.startswith("/") else rest
        if path in ("", ":memory:"):
            return SqlUrl("sqlite", db_url, path=":memory:")
        p = Path(path)
        if not p.is_absolute():
            p = Path(data_dir if data_dir is not None else Path.cwd()) / p
        return SqlUrl("sqlite", db_url, path=str(p))
    parts = urlsplit(db_url)
    try:
        port = parts.port or _DEFAULT_PORT[dialect]
    except ValueError:
        raise StoreConfigError(f"bad port in db_url {mask_url(db_url)!r}") from None
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database:
        raise StoreConfigError(
            f"db_url {mask_url(db_url)!r} needs a host and a database name "
            f"({'mysql' if dialect == 'mysql' else 'postgresql'}://user:pass@host[:port]/db)"
        )
    options = dict(parse_qsl(parts.query))
    timeout = 10.0
    if "connect_timeout" in options:
        try:
            timeout = float(options.pop("connect_timeout"))
        except ValueError:
            raise StoreConfigError(f"bad connect_timeout in {mask_url(db_url)!r}") from None
    if options:
        raise StoreConfigError(
            f"unknown db_url option(s) {sorted(options)} in {mask_url(db_url)!r}"
        )
    return SqlUrl(
        dialect,
        db_url,
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=database,
        connect_timeout=timeout,
    )


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
        the new ids in order. Drivers that can send one multi-row INSERT do."""
        return [await self.insert(prefix + row, args) for args in rows]

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
    url: SqlUrl

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


def open_pool(url: SqlUrl, min_size: int = 1, max_size: int = 10) -> Pool:
    """The pool for *url* (not opened).  Drivers are imported only when used."""
    if url.dialect == "mysql":
        from .mysql import MysqlPool

        return MysqlPool(url, min_size, max_size)
    if url.dialect == "postgresql":
        from .postgres import PostgresPool

        return PostgresPool(url, min_size, max_size)
    return SqlitePool(url)


# --------------------------------------------------------------------------- sqlite


class _SqliteConn(Conn):
    dialect: SqlDialect = "sqlite"
    returning = sqlite3.sqlite_version_info >= (3, 35)

    def __init__(self, pool: SqlitePool) -> None:
        self._pool = pool

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._pool.lock:
                assert self._pool.conn is not None
                return fn(self._pool.conn)

        try:
            return await asyncio.to_thread(locked)
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"sqlite: {e}") from e
        except sqlite3.Error as e:
            raise StoreError(f"sqlite: {e}") from e

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        q = sql.replace("%s", "?")
        return await self._call(lambda c: c.execute(q, tuple(args)).rowcount)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        q = sql.replace("%s", "?")
        return await self._call(lambda c: c.execute(q, tuple(args)).fetchall())

    async def insert(self, sql: str, args: Sequence[Any]) -> int:
        q = sql.replace("%s", "?")
        return await self._call(lambda c: int(c.execute(q, tuple(args)).lastrowid or 0))

    async def begin(self) -> None:
        await self.execute("BEGIN IMMEDIATE")


class SqlitePool(Pool):
    """One sqlite3 connection used from worker threads under a lock.

    SQLite serialises writers anyway; a lock held for the whole of a transaction
    (``acquire`` to release) keeps other coroutines' statements out of it.
    """

    dialect: SqlDialect = "sqlite"

    def __init__(self, url: SqlUrl) -> None:
        self.url = url
        self.conn: sqlite3.Connection | None = None
        self.lock = threading.RLock()
        self._txn_lock = asyncio.Lock()

    async def open(self) -> None:
        if self.conn is not None:
            return
        path = self.url.path
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"cannot open {path}: {e}") from e
        self.conn = conn

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        if self.conn is None:
            raise StoreUnavailable("database is closed")
        async with self._txn_lock:
            yield _SqliteConn(self)


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
    "SqlDialect",
    "SqlUrl",
    "SqlitePool",
    "StoreConflict",
    "StoreUnavailable",
    "dialect_of",
    "mask_url",
    "open_pool",
    "parse_sql_url",
    "reason",
    "run_txn",
]

"""The subscriber table: Kamailio's, plus one column, in the silo's database.

Kamailio's ``subscriber`` table (schema version 7) column for column, so that an
existing Kamailio user base works as is and Kamailio's ``auth_db`` can use users
created here: ``ha1`` = MD5(user:realm:password), ``ha1b`` = MD5(user@domain:realm:
password), as kamctl writes them. Our addition, ``ha1_sha256`` = SHA-256(user:realm:
password), is defaulted, so Kamailio's INSERTs (which name their columns) still work.

The plaintext ``password`` column stays empty when sipsilo writes a user; a row that has
one (kamctl with STORE_PLAINTEXT_PW=1) is accepted and used for whatever hash is missing.

The DDL is built from the same dialect-neutral :class:`Column` descriptions as the silo
table, for SQLite, MySQL/MariaDB and PostgreSQL alike (Kamailio's kamdbctl DDL for each,
plus our column).  The table lives in the silo's database (``[msilo] db_url``), reached
through :mod:`sipsilo.db` like every store: one :class:`SqlSubscribers` over a pool of
any of the three (:class:`SqliteSubscribers` is the same on a SQLite file, opened for
synchronous callers).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sipsilo.db.base import Pool, open_pool
from sipsilo.db.dialects import DIALECTS
from sipsilo.db.errors import StoreDuplicate, StoreError
from sipsilo.db.migrate import ensure_in_txn
from sipsilo.db.schema import (
    KAMAILIO_VERSION_TABLE,
    SIPSILO_VERSION_TABLE,
    Column,
    Dialect,
    MigrationContext,
    check_identifier,
    column_ddl,
    create_or_adopt,
    kamailio_version_table_sql,
    sipsilo_version_table_sql,
    table_options,
)
from sipsilo.db.sqlite import SqlitePool
from sipsilo.db.url import DbUrl
from sipsilo.sip.digest import ha1 as digest_ha1

if TYPE_CHECKING:
    from sipsilo.config import Config  # the server's; domain code needs no transport

T = TypeVar("T")

#: Kamailio's version row for the subscriber table (Kamailio 5.x).
KAMAILIO_SUBSCRIBER_VERSION = 7
SUBSCRIBER_SCHEMA_VERSION = 1

KAMAILIO_COLUMNS: tuple[Column, ...] = (
    Column("id", "id", not_null=True),
    Column("username", "varchar", 64, "", True),
    Column("domain", "varchar", 64, "", True),
    Column("password", "varchar", 64, "", True),
    Column("ha1", "varchar", 128, "", True),
    Column("ha1b", "varchar", 128, "", True),
)
EXTRA_COLUMNS: tuple[Column, ...] = (
    Column("ha1_sha256", "varchar", 128, "", True, kamailio=False),
)
COLUMNS = KAMAILIO_COLUMNS + EXTRA_COLUMNS


def _unique_name(table: str, dialect: Dialect) -> str:
    # Same naming rule as Kamailio's DDL (and db.schema): per table on MySQL only.
    return "account_idx" if dialect == "mysql" else f"{table}_account_idx"


def _username_index_name(table: str, dialect: Dialect) -> str:
    return "username_idx" if dialect == "mysql" else f"{table}_username_idx"


def create_table_sql(table: str, dialect: Dialect) -> str:
    check_identifier(table)
    cols = ",\n    ".join(column_ddl(c, dialect) for c in COLUMNS)
    return (f"CREATE TABLE IF NOT EXISTS {table} (\n    {cols},\n"
            f"    CONSTRAINT {_unique_name(table, dialect)} UNIQUE (username, domain)\n)"
            f"{table_options(dialect)}")


def create_index_sql(table: str, dialect: Dialect) -> str:
    ine = "" if dialect == "mysql" else "IF NOT EXISTS "
    return f"CREATE INDEX {ine}{_username_index_name(table, dialect)} ON {table} (username)"


def full_ddl(table: str = "subscriber", dialect: Dialect = "sqlite") -> list[str]:
    return [kamailio_version_table_sql(dialect), create_table_sql(table, dialect),
            create_index_sql(table, dialect), sipsilo_version_table_sql(dialect)]


def ensure_schema(ctx: MigrationContext) -> None:
    """Create the table, or adopt Kamailio's by adding our column; idempotent.

    Runs inside the caller's transaction (``ctx.table`` is the subscriber table).
    """
    ctx.execute(kamailio_version_table_sql(ctx.dialect))
    ctx.execute(sipsilo_version_table_sql(ctx.dialect))
    missing = create_or_adopt(ctx, create_table_sql(ctx.table, ctx.dialect),
                              KAMAILIO_COLUMNS, EXTRA_COLUMNS)
    if missing:
        raise ValueError(f"table {ctx.table!r} exists but lacks Kamailio subscriber "
                         f"columns {missing}")
    if _username_index_name(ctx.table, ctx.dialect) not in ctx.indexes():
        ctx.execute(create_index_sql(ctx.table, ctx.dialect))
    ctx.execute(f"SELECT table_version FROM {KAMAILIO_VERSION_TABLE} WHERE table_name = ?",
                (ctx.table,))
    if ctx.cur.fetchone() is None:
        ctx.execute(f"INSERT INTO {KAMAILIO_VERSION_TABLE} (table_name, table_version) "
                    "VALUES (?, ?)", (ctx.table, KAMAILIO_SUBSCRIBER_VERSION))
    component = f"auth:{ctx.table}"
    ctx.execute(f"SELECT version FROM {SIPSILO_VERSION_TABLE} WHERE component = ?", (component,))
    if ctx.cur.fetchone() is None:
        ctx.execute(f"INSERT INTO {SIPSILO_VERSION_TABLE} (component, version) VALUES (?, ?)",
                    (component, SUBSCRIBER_SCHEMA_VERSION))


@dataclass(frozen=True)
class Subscriber:
    id: int
    username: str
    domain: str
    password: str   # plaintext, normally "" (only Kamailio tools may set it)
    ha1: str        # MD5(username:realm:password)
    ha1b: str       # MD5(username@domain:realm:password), Kamailio's
    ha1_sha256: str  # SHA-256(username:realm:password), ours

    def hash_for(self, algorithm: str, realm: str) -> str | None:
        """The stored HA1 for a digest *algorithm* ("MD5", "SHA-256", "-sess" too).

        Falls back to the plaintext password when the hash column is empty; None if
        neither is there (a Kamailio-made user has no SHA-256 hash until a passwd).
        """
        sha = algorithm.upper().startswith("SHA-256")
        stored = self.ha1_sha256 if sha else self.ha1
        if stored:
            return stored.lower()
        if self.password:
            return digest_ha1("SHA-256" if sha else "MD5", self.username, realm, self.password)
        return None


def hashes(username: str, domain: str, realm: str, password: str) -> tuple[str, str, str]:
    """(ha1, ha1b, ha1_sha256) as stored."""
    return (digest_ha1("MD5", username, realm, password),
            digest_ha1("MD5", f"{username}@{domain}", realm, password),
            digest_ha1("SHA-256", username, realm, password))


_SELECT = "SELECT id, username, domain, password, ha1, ha1b, ha1_sha256 FROM {t}"


def _row(r: Sequence[object]) -> Subscriber:
    return Subscriber(int(str(r[0])), *(str(v or "") for v in r[1:7]))


def exact_row(rows: Sequence[Sequence[object]], username: str, domain: str
              ) -> Subscriber | None:
    """The row of exactly *username* at *domain*, among the rows a lookup returned.

    MariaDB/MySQL's default collations compare ``'bob ' = 'bob'`` and ``'BOB' = 'bob'``
    as true, so ``WHERE username = %s`` can return bob's row for another name, and a
    guesser would get new failure budgets by padding. A user part is case-sensitive
    (RFC 3261 §19.1.4), so only the very same text counts; the domain is compared
    case-insensitively. Checked on every backend, so all three answer alike.
    """
    for r in rows:
        if str(r[1] or "") == username and str(r[2] or "").lower() == domain.lower():
            return _row(r)
    return None


def _exists_error(username: str, domain: str) -> ValueError:
    return ValueError(f"user {username}@{domain} exists already (use 'sipsilo user passwd')")


class SqlSubscribers:
    """Subscriber rows in SQLite, MySQL/MariaDB or PostgreSQL, through a :class:`Pool`.

    The ``a*`` methods are the async ones, run on the loop the pool was opened on.  The
    plain-named methods block: they run the async one on that loop and wait, so they
    must be called from another thread -- the authenticator calls :meth:`get` through
    ``asyncio.to_thread``; the CLI uses :meth:`blocking`, whose loop runs in a thread
    of its own.
    """

    def __init__(self, pool: Pool, table: str = "subscriber") -> None:
        self.table = check_identifier(table)
        self.pool = pool
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None  # our own loop's (blocking())
        # One account, on MySQL also byte for byte: writes have no exact_row
        # (see there); the plain comparison stays first, for the index.
        dialect = DIALECTS[pool.dialect]
        self._key = dialect.exact(("username", "domain"))
        self._dialect = dialect

    @classmethod
    def blocking(cls, url: DbUrl, table: str = "subscriber") -> SqlSubscribers:
        """An opened store for synchronous callers: its loop runs in a daemon thread."""
        if not url.is_server:
            return SqliteSubscribers(url.path, table, url.busy_timeout)
        store = cls(open_pool(url, 1, 1), table)
        store._open_on_own_loop()
        return store

    def _open_on_own_loop(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="sipsilo-subscribers",
                                  daemon=True)
        thread.start()
        self._thread = thread
        try:
            asyncio.run_coroutine_threadsafe(self.open(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._thread = None
            raise

    async def open(self) -> None:
        await self.pool.open()
        self._loop = asyncio.get_running_loop()

    async def aclose(self) -> None:
        await self.pool.close()

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:  # opened on someone else's loop: aclose()
            if loop is not None and not loop.is_closed():
                self._sync(self.aclose())
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None

    def _sync(self, coro: Coroutine[object, object, T]) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise StoreError("subscriber store is not open")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise RuntimeError("blocking call on the subscriber store's own event loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    # ------------------------------------------------------------------ async

    async def aensure_schema(self) -> None:
        """Create or adopt the table (see :func:`ensure_schema`), serialised across
        processes by a named server lock; MySQL commits DDL implicitly, which the
        re-runnable :func:`ensure_schema` allows for."""
        await ensure_in_txn(self.pool, self.table, ensure_schema)

    async def aget(self, username: str, domain: str) -> Subscriber | None:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_SELECT.format(t=self.table) +
                                    " WHERE username = %s AND domain = %s", (username, domain))
        # Not the exact comparison in SQL: exact_row also finds a case-different domain.
        return exact_row(rows, username, domain)

    async def acount(self) -> int:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT COUNT(*) FROM {self.table}")
        return int(rows[0][0])

    async def alist(self) -> builtins.list[Subscriber]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_SELECT.format(t=self.table) + " ORDER BY domain, username")
        return [_row(r) for r in rows]

    async def aadd(self, username: str, domain: str, realm: str, password: str) -> None:
        ha1, ha1b, ha1_sha256 = hashes(username, domain, realm, password)
        if await self.aget(username, domain) is not None:
            raise _exists_error(username, domain)
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    f"INSERT INTO {self.table} (username, domain, password, ha1, ha1b,"
                    " ha1_sha256) VALUES (%s, %s, '', %s, %s, %s)",
                    (username, domain, ha1, ha1b, ha1_sha256))
        except StoreError as exc:
            # A concurrent add won the unique key (account_idx) between our look and insert.
            if await self.aget(username, domain) is not None:
                raise _exists_error(username, domain) from None
            if isinstance(exc, StoreDuplicate):
                # MySQL/MariaDB's default collation: the key takes 'BOB' for 'bob'.
                raise ValueError(
                    f"user {username}@{domain} cannot be added: the database holds a user"
                    " whose name differs only in case or trailing spaces (its collation"
                    " compares them equal; MySQL/MariaDB)") from None
            raise

    async def aset_password(self, username: str, domain: str, realm: str,
                            password: str) -> bool:
        ha1, ha1b, ha1_sha256 = hashes(username, domain, realm, password)
        async with self.pool.acquire() as conn:
            # The plaintext column is cleared: it would otherwise hold the old password.
            n = await conn.execute(
                f"UPDATE {self.table} SET password = '', ha1 = %s, ha1b = %s, ha1_sha256 = %s"
                f" WHERE {self._key}",
                (ha1, ha1b, ha1_sha256, *self._dialect.exact_args((username, domain))))
        if n == 0 and self.pool.dialect == "mysql":
            # MySQL counts changed rows, not matched ones: the same password twice is 0.
            return await self.aget(username, domain) is not None
        return n > 0

    async def aremove(self, username: str, domain: str) -> bool:
        async with self.pool.acquire() as conn:
            n = await conn.execute(f"DELETE FROM {self.table} WHERE {self._key}",
                                   self._dialect.exact_args((username, domain)))
        return n > 0

    # ------------------------------------------------------------------ blocking

    def ensure_schema(self) -> None:
        self._sync(self.aensure_schema())

    def get(self, username: str, domain: str) -> Subscriber | None:
        return self._sync(self.aget(username, domain))

    def count(self) -> int:
        return self._sync(self.acount())

    def list(self) -> builtins.list[Subscriber]:
        return self._sync(self.alist())

    def add(self, username: str, domain: str, realm: str, password: str) -> None:
        self._sync(self.aadd(username, domain, realm, password))

    def set_password(self, username: str, domain: str, realm: str, password: str) -> bool:
        return self._sync(self.aset_password(username, domain, realm, password))

    def remove(self, username: str, domain: str) -> bool:
        return self._sync(self.aremove(username, domain))


class SqliteSubscribers(SqlSubscribers):
    """:class:`SqlSubscribers` on a SQLite file, opened for synchronous callers (the
    CLI, tests): its pool runs on a loop in a thread of its own.  Writes wait for a
    running server's silo writer (``busy_timeout``) instead of failing."""

    def __init__(self, path: str, table: str = "subscriber", busy_timeout: float = 10.0
                 ) -> None:
        url = DbUrl("sqlite", f"sqlite:///{path}", "msilo.db_url", path=path,
                    busy_timeout=busy_timeout)
        super().__init__(SqlitePool(url), table)
        self.path = path
        self._open_on_own_loop()


Subscribers = SqlSubscribers


def open_blocking(config: Config) -> SqlSubscribers:
    """The configured subscriber store (``[msilo] db_url``, ``[auth] db_table``), opened
    for synchronous use (the CLI); the caller closes it.  The table is not touched."""
    url = config.msilo_db
    try:
        return SqlSubscribers.blocking(url, config.auth.db_table)
    except StoreError as e:
        raise type(e)(f"{url.key}: {e}") from None

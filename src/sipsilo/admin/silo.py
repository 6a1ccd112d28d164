"""``sipsilo silo ...``, ``sipsilo db ...`` and ``check-config --check-db``.

Each function opens its own connection (see the package text): for a SQLite file a plain
connection in this thread, never the server's writer queue; for a database server a
pool of one connection on a private event loop.  The statements are the message store's
(:class:`~sipsilo.silo.ops.MessageOps`), run on that connection.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sipsilo.config import Config
from sipsilo.db.base import Conn, open_pool, run_txn
from sipsilo.db.errors import MigrationError, StoreError, StoreUnavailable
from sipsilo.db.migrate import migrate_pool, schema_version
from sipsilo.db.schema import LATEST_VERSION, current_version, migrate
from sipsilo.db.sqlite import ThreadConn, connect, run_now
from sipsilo.db.url import DbUrl, mask_url
from sipsilo.silo.ops import MessageOps
from sipsilo.silo.store import PURGE_CHUNK, StoredMessage
from sipsilo.sip.uri import split_aor

from .run import arun
from .users import subscribers_init

T = TypeVar("T")
Op = Callable[[Conn], Awaitable[T]]

__all__ = ["check_db", "db_init", "db_migrate", "delete_message", "list_messages", "purge",
           "show_message", "silo_summary", "waiting_users"]


@contextmanager
def _sqlite(url: DbUrl, table: str, *, create: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to an existing, up-to-date database (or a new one with *create*)."""
    if url.path != ":memory:":
        if create:
            Path(url.path).parent.mkdir(parents=True, exist_ok=True)
        elif not Path(url.path).exists():
            raise StoreError(f"no message database at {url.path}; run 'sipsilo db init'")
    try:
        conn = connect(url.path, busy_timeout=url.busy_timeout, synchronous=url.synchronous)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {url.path}: {e}") from e
    try:
        if not create:
            v = current_version(conn.cursor(), "sqlite", table)
            if v != LATEST_VERSION:
                raise StoreError(
                    f"{url.path}: table {table!r} is at schema version {v}, this sipsilo "
                    f"uses {LATEST_VERSION}; run 'sipsilo db migrate'"
                )
        yield conn
    except sqlite3.Error as e:
        raise StoreError(f"sqlite: {e}") from e
    finally:
        conn.close()


async def _on_server(url: DbUrl, table: str, fn: Op[T]) -> T:
    """*fn* on a pool of one connection, once the table is known to be up to date."""
    pool = open_pool(url, 1, 1)
    try:
        await pool.open()
    except StoreUnavailable as e:
        raise url.unavailable(e) from None
    try:
        v = await schema_version(pool, table)
        if v != LATEST_VERSION:
            raise MigrationError(
                f"table {table!r} is at schema version {v}, this sipsilo uses "
                f"{LATEST_VERSION}; run 'sipsilo db migrate'"
            )
        return await run_txn(pool, fn, txn=False)
    finally:
        await pool.close()


def _run(config: Config, op: Callable[[MessageOps, Conn], Awaitable[T]]) -> T:
    """*op* on the configured message table.  Each statement commits by itself: a
    long purge never holds the write lock against a running server for long."""
    url, table = config.msilo_db, config.msilo.db_table
    ops = MessageOps(table, url.dialect)
    if url.is_server:
        return arun(_on_server(url, table, lambda c: op(ops, c)))
    with _sqlite(url, table) as conn:
        return run_now(op(ops, ThreadConn(conn)))


def _as_dict(msg: StoredMessage) -> dict[str, Any]:
    d = dataclasses.asdict(msg)
    d["aor"] = f"{msg.username}@{msg.domain}"
    return d


# --------------------------------------------------------------------------- db


def db_migrate(config: Config) -> tuple[int, int]:
    """Apply pending migrations; return (version before, version after)."""
    url, table = config.msilo_db, config.msilo.db_table
    if not url.is_server:
        with _sqlite(url, table, create=True) as conn:
            return migrate(conn, "sqlite", table)

    async def main() -> tuple[int, int]:
        pool = open_pool(url, 1, 1)
        try:
            await pool.open()
            return await migrate_pool(pool, table)
        except StoreUnavailable as e:
            raise url.unavailable(e) from None
        finally:
            await pool.close()

    return arun(main())


def db_init(config: Config) -> int:
    """Create the database and tables if missing (idempotent); return the schema version.
    The subscriber table too, in the same database (Kamailio's DDL plus our column; a
    Kamailio table is adopted)."""
    version = db_migrate(config)[1]
    subscribers_init(config)
    return version


def check_db(config: Config) -> list[str]:
    """Connect to every configured database server (``check-config --check-db``).

    Returns one line per database; raises StoreError naming the config key on failure.
    """

    async def probe(url: DbUrl, table: str | None) -> str:
        pool = open_pool(url, 1, 1)
        try:
            await pool.open()
            line = f"{url.key}: connected to {url.masked}"
            if table is not None:
                v = await schema_version(pool, table)
                line += f", table {table} at schema version {v}" + (
                    "" if v else " (run 'sipsilo db init')"
                )
            return line
        except StoreUnavailable as e:
            raise url.unavailable(e) from None
        finally:
            await pool.close()

    msilo = config.msilo_db
    if msilo.is_server:
        lines = [arun(probe(msilo, config.msilo.db_table))]
    else:
        lines = [f"{msilo.key}: sqlite file {msilo.path}"]
    registrar = config.registrar_db
    if registrar is not None and registrar.is_server:
        lines.append(arun(probe(registrar, None)))
    if config.cluster.redis_url is not None:
        lines.append(arun(_probe_redis(config.cluster.redis_url)))
    return lines


async def _probe_redis(url: str) -> str:
    """``cluster.redis_url``: a PING answered, or StoreUnavailable naming the key."""
    from sipsilo.auth.redis_state import connect  # the redis client: only if configured

    client = connect(url, timeout=2.0)
    try:
        await client.ping()
    except Exception as exc:  # refused, timeout, auth, wrong scheme: one line
        raise StoreUnavailable(f"cluster.redis_url: cannot connect to {mask_url(url)}: "
                               f"{str(exc) or type(exc).__name__}") from None
    finally:
        await client.aclose()
    return f"cluster.redis_url: connected to {mask_url(url)}"


# --------------------------------------------------------------------------- silo


def list_messages(config: Config, aor: str | None = None, limit: int = 10000
                  ) -> list[dict[str, Any]]:
    """Stored rows in id order, of one AoR or all.  Each dict has the StoredMessage fields
    (``body`` as bytes, ``ctype`` the full Content-Type) plus ``aor`` = "user@domain"."""
    user, domain = split_aor(aor) if aor else (None, None)
    rows = _run(config, lambda ops, c: ops.list_messages(c, user, domain, limit, 0))
    return [_as_dict(m) for m in rows]


def waiting_users(config: Config) -> list[dict[str, Any]]:
    """Users with stored messages: ``aor``, ``count`` and ``oldest`` (inc_time), by AoR."""
    rows = _run(config, lambda ops, c: ops.waiting(c))
    return [{"aor": f"{r[0]}@{r[1]}", "count": int(r[2]), "oldest": int(r[3])} for r in rows]


def silo_summary(config: Config) -> dict[str, int | None]:
    """``rows`` stored and the ``oldest`` one's inc_time (the first by id; None when
    empty), for metrics. Its own connection: never queued behind the server's stores."""
    rows, oldest = _run(config, lambda ops, c: ops.summary(c))
    return {"rows": rows, "oldest": oldest}


def show_message(config: Config, id: int) -> dict[str, Any] | None:
    m = _run(config, lambda ops, c: ops.get(c, int(id)))
    return _as_dict(m) if m else None


def delete_message(config: Config, id: int) -> bool:
    return _run(config, lambda ops, c: ops.by_ids(c, ops.sql_delete, [int(id)], None)) > 0


def purge(config: Config, aor: str | None = None, expired: bool = False) -> int:
    """Delete rows; return how many.

    * ``expired=True``: only expired rows (``exp_time <= now``), of *aor* if given;
    * *aor* alone: every row of that account;
    * neither: EVERY row of the table (the CLI should confirm first).
    """
    now = int(time.time())
    if aor:
        user, domain = split_aor(aor)
        if expired:
            return _run(config, lambda ops, c: ops.delete_where(
                c, "username = %s AND domain = %s AND exp_time <= %s", (user, domain, now)))
        return _run(config, lambda ops, c: ops.delete_where(
            c, "username = %s AND domain = %s", (user, domain)))
    if expired:
        return _run(config, lambda ops, c: _purge_expired(ops, c, now))
    return _run(config, lambda ops, c: ops.delete_where(c, "1 = 1"))


async def _purge_expired(ops: MessageOps, c: Conn, now: int) -> int:
    """In chunks, as the server purges: each DELETE is a short transaction."""
    total = 0
    while True:
        n = await c.execute(ops.sql_purge_expired, (now,))
        total += n
        if n < PURGE_CHUNK:
            return total

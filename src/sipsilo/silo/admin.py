"""Message-store administration for the CLI, and the store factory.

The functions are synchronous and open their own short-lived connection, so they work
while a server is running on the same database: SQLite's WAL lets them read beside the
server, and ``busy_timeout`` makes their writes wait for the server's write lock instead
of failing.  From the configuration only ``config.msilo.db_url``,
``config.msilo.db_table`` and ``config.data_dir`` are used.

A MySQL/MariaDB or PostgreSQL ``db_url`` is dispatched to the same operations of
:class:`~sipsilo.silo.sqlstore.SqlSiloStore`, run on a private event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

from sipsilo.config_values import mask_url

from .schema import LATEST_VERSION, check_identifier, current_version, migrate
from .sqlbase import StoreUnavailable, dialect_of, open_pool, parse_sql_url
from .sqlite import SqliteOps, SqliteSiloStore, connect, write_txn
from .store import SiloStore, StoreConfigError, StoreError

if TYPE_CHECKING:
    from .sqlstore import SqlSiloStore

T = TypeVar("T")

__all__ = [
    "SqliteUrl",
    "check_db",
    "db_init",
    "db_migrate",
    "delete_message",
    "list_messages",
    "open_store",
    "parse_aor",
    "parse_db_url",
    "purge",
    "show_message",
    "silo_summary",
    "waiting_users",
]


@dataclasses.dataclass(frozen=True)
class SqliteUrl:
    path: str  # ":memory:" or a file path
    synchronous: str = "FULL"
    busy_timeout: float = 10.0


def parse_db_url(db_url: str, data_dir: str | Path | None = None) -> SqliteUrl:
    """``sqlite:///rel`` (relative to *data_dir*, else the cwd), ``sqlite:////abs``,
    ``sqlite://`` or ``sqlite:///:memory:``; optional ``?synchronous=NORMAL&busy_timeout=5``.
    Other schemes raise :class:`StoreConfigError` (MySQL/PostgreSQL backends: not yet)."""
    scheme, sep, rest = db_url.partition("://")
    base = scheme.lower().split("+", 1)[0]
    if not sep or base != "sqlite":
        raise StoreConfigError(
            f"unsupported db_url scheme {scheme!r} in {mask_url(db_url)!r}: "
            "only sqlite:///relative/path or sqlite:////absolute/path is supported"
        )
    rest, _, query = rest.partition("?")
    if rest and not rest.startswith("/"):
        raise StoreConfigError(f"bad sqlite URL {db_url!r}: expected sqlite:///path")
    path = rest[1:]
    opts: dict[str, Any] = {}
    for key, value in parse_qsl(query):
        if key == "synchronous":
            opts["synchronous"] = value.upper()
        elif key == "busy_timeout":
            opts["busy_timeout"] = float(value)
        else:
            raise StoreConfigError(f"unknown sqlite URL option {key!r} in {db_url!r}")
    if path in ("", ":memory:"):
        return SqliteUrl(":memory:", **opts)
    p = Path(path)
    if not p.is_absolute():
        p = Path(data_dir if data_dir is not None else Path.cwd()) / p
    return SqliteUrl(str(p), **opts)



def open_store(
    db_url: str,
    table: str = "silo",
    data_dir: str | Path | None = None,
    *,
    pool_min: int = 1,
    pool_max: int = 10,
) -> SiloStore:
    """The store backend for *db_url* (not opened yet: ``await store.open()``).

    ``sqlite:///...`` -> :class:`SqliteSiloStore`; ``mysql[+asyncmy]://`` and
    ``postgres[ql]://`` -> :class:`~sipsilo.silo.sqlstore.SqlSiloStore` with a pool of
    *pool_min*..*pool_max* connections."""
    try:
        check_identifier(table)
    except ValueError as e:
        raise StoreConfigError(str(e)) from None
    if dialect_of(db_url) in ("mysql", "postgresql"):
        from .sqlstore import SqlSiloStore

        return SqlSiloStore(open_pool(parse_sql_url(db_url), pool_min, pool_max), table)
    url = parse_db_url(db_url, data_dir)
    return SqliteSiloStore(
        url.path, table, synchronous=url.synchronous, busy_timeout=url.busy_timeout
    )


def parse_aor(aor: str) -> tuple[str, str]:
    """``sip:bob@example.com`` / ``bob@example.com`` (also ``<sips:...;params>``) ->
    (username, domain).  The domain is lower-cased, a port is dropped: rows are keyed by
    the bare user and host, as Kamailio's m_store keys them."""
    s = aor.strip().strip("<>")
    low = s.lower()
    for prefix in ("sip:", "sips:"):
        if low.startswith(prefix):
            s = s[len(prefix) :]
            break
    s = s.split(";", 1)[0].split("?", 1)[0]
    user, at, host = s.rpartition("@")
    if not at or not user or not host:
        raise ValueError(f"not an address of record (user@domain): {aor!r}")
    if host.startswith("["):  # IPv6 reference: keep the brackets, drop a port after them
        host = host[: host.find("]") + 1] if "]" in host else host
    else:
        host = host.split(":", 1)[0]
    return user, host.lower()


# --------------------------------------------------------------------------- helpers


def _settings(config: Any) -> tuple[SqliteUrl, str]:
    msilo = config.msilo
    url = parse_db_url(str(msilo.db_url), getattr(config, "data_dir", None))
    table = str(getattr(msilo, "db_table", None) or "silo")
    try:
        check_identifier(table)
    except ValueError as e:
        raise StoreConfigError(str(e)) from None
    return url, table


@contextmanager
def _session(config: Any, *, create: bool = False) -> Iterator[SqliteOps]:
    """A connection to an existing, up-to-date database (or a new one with *create*)."""
    url, table = _settings(config)
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
        yield SqliteOps(conn, table)
    except sqlite3.Error as e:
        raise StoreError(f"sqlite: {e}") from e
    finally:
        conn.close()


def _is_server(config: Any) -> bool:
    return dialect_of(str(config.msilo.db_url)) in ("mysql", "postgresql")


def _arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro* to completion from synchronous code, even when a loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def _server_op(config: Any, op: Callable[[SqlSiloStore], Awaitable[T]]) -> T:
    """Run *op(store)* on a short-lived SqlSiloStore (pool of one connection)."""
    from .sqlstore import SqlSiloStore

    _, table = _server_settings(config)
    url = parse_sql_url(str(config.msilo.db_url))

    async def main() -> T:
        store = SqlSiloStore(open_pool(url, 1, 1), table, flushers=1, auto_migrate=False)
        try:
            await store.open()
        except StoreUnavailable as e:
            raise StoreUnavailable(f"msilo.db_url: {e}") from e
        try:
            return await op(store)
        finally:
            await store.close()

    return _arun(main())


def _server_migrate(config: Any) -> tuple[int, int]:
    from .sqlstore import migrate_pool

    _, table = _server_settings(config)
    url = parse_sql_url(str(config.msilo.db_url))

    async def main() -> tuple[int, int]:
        pool = open_pool(url, 1, 1)
        try:
            await pool.open()
            return await migrate_pool(pool, table)
        except StoreUnavailable as e:
            raise StoreUnavailable(f"msilo.db_url: {e}") from e
        finally:
            await pool.close()

    return _arun(main())


def _server_settings(config: Any) -> tuple[str, str]:
    table = str(getattr(config.msilo, "db_table", None) or "silo")
    try:
        check_identifier(table)
    except ValueError as e:
        raise StoreConfigError(str(e)) from None
    return str(config.msilo.db_url), table


def check_db(config: Any) -> list[str]:
    """Connect to every configured database server (``check-config --check-db``).

    Returns one line per database; raises StoreError naming the config key on failure.
    """
    from .sqlstore import schema_version

    async def probe(key: str, db_url: str, table: str | None) -> str:
        url = parse_sql_url(db_url)
        pool = open_pool(url, 1, 1)
        try:
            await pool.open()
            line = f"{key}: connected to {url.masked}"
            if table is not None:
                v = await schema_version(pool, table)
                line += f", table {table} at schema version {v}" + (
                    "" if v else " (run 'sipsilo db init')"
                )
            return line
        except StoreUnavailable as e:
            raise StoreUnavailable(f"{key}: {e}") from e
        finally:
            await pool.close()

    lines = []
    if _is_server(config):
        _, table = _server_settings(config)
        lines.append(_arun(probe("msilo.db_url", str(config.msilo.db_url), table)))
    else:
        lines.append(f"msilo.db_url: sqlite file {_settings(config)[0].path}")
    reg_url = getattr(getattr(config, "registrar", None), "db_url", None)
    if reg_url and dialect_of(str(reg_url)) in ("mysql", "postgresql"):
        lines.append(_arun(probe("registrar.db_url", str(reg_url), None)))
    return lines


def _as_dict(msg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(msg)
    d["aor"] = f"{msg.username}@{msg.domain}"
    return d


# --------------------------------------------------------------------------- commands


def db_init(config: Any) -> int:
    """Create the database and tables if missing (idempotent); return the schema version.

    With an ``[auth]`` section (a real Config), the subscriber table too, in the same
    database (Kamailio's DDL plus our column; a Kamailio table is adopted)."""
    if _is_server(config):
        version = db_migrate(config)[1]
    else:
        with _session(config, create=True) as ops:
            version = migrate(ops.conn, "sqlite", ops.table)[1]
    if getattr(config, "auth", None) is not None:
        from sipsilo.auth.admin import subscribers_init

        subscribers_init(config)
    return version


def db_migrate(config: Any) -> tuple[int, int]:
    """Apply pending migrations; return (version before, version after)."""
    if _is_server(config):
        return _server_migrate(config)
    with _session(config, create=True) as ops:
        return migrate(ops.conn, "sqlite", ops.table)


def list_messages(config: Any, aor: str | None = None, limit: int = 10000) -> list[dict[str, Any]]:
    """Stored rows in id order, of one AoR or all.  Each dict has the StoredMessage fields
    (``body`` as bytes, ``ctype`` the full Content-Type) plus ``aor`` = "user@domain"."""
    user, domain = parse_aor(aor) if aor else (None, None)
    if _is_server(config):
        rows = _server_op(config, lambda s: s.list(user, domain, limit))
        return [_as_dict(m) for m in rows]
    with _session(config) as ops:
        return [_as_dict(m) for m in ops.list(user, domain, limit)]


def waiting_users(config: Any) -> list[dict[str, Any]]:
    """Users with stored messages: ``aor``, ``count`` and ``oldest`` (inc_time), by AoR."""
    _, table = _server_settings(config)
    sql = (f"SELECT username, domain, COUNT(*), MIN(inc_time) FROM {table}"
           " GROUP BY username, domain ORDER BY username, domain")
    if _is_server(config):
        from .sqlbase import run_txn

        rows: list[Any] = _server_op(
            config, lambda s: run_txn(s.pool, lambda c: c.fetch(sql, ()), txn=False))
    else:
        with _session(config) as ops:
            rows = list(ops.conn.execute(sql))
    return [{"aor": f"{r[0]}@{r[1]}", "count": int(r[2]), "oldest": int(r[3])} for r in rows]


def silo_summary(config: Any) -> dict[str, int | None]:
    """``rows`` stored and the ``oldest`` one's inc_time (the first by id; None when
    empty), for metrics. Its own connection: never queued behind the server's stores."""
    _, table = _server_settings(config)
    count_sql = f"SELECT COUNT(*) FROM {table}"
    first_sql = f"SELECT inc_time FROM {table} ORDER BY id LIMIT 1"
    if _is_server(config):
        from .sqlbase import run_txn

        async def both(s: SqlSiloStore) -> tuple[list[Any], list[Any]]:
            async def fetch(c: Any) -> tuple[list[Any], list[Any]]:
                return await c.fetch(count_sql, ()), await c.fetch(first_sql, ())

            return await run_txn(s.pool, fetch, txn=False)

        counted, first = _server_op(config, both)
    else:
        with _session(config) as ops:
            counted = list(ops.conn.execute(count_sql))
            first = list(ops.conn.execute(first_sql))
    return {"rows": int(counted[0][0]), "oldest": int(first[0][0]) if first else None}


def show_message(config: Any, id: int) -> dict[str, Any] | None:
    if _is_server(config):
        m = _server_op(config, lambda s: s.get(int(id)))
        return _as_dict(m) if m else None
    with _session(config) as ops:
        m = ops.get(int(id))
        return _as_dict(m) if m else None


def delete_message(config: Any, id: int) -> bool:
    if _is_server(config):
        return bool(_server_op(config, lambda s: s.delete(int(id))))
    with _session(config) as ops, write_txn(ops.conn):
        return ops.delete(int(id))


def purge(config: Any, aor: str | None = None, expired: bool = False) -> int:
    """Delete rows; return how many.

    * ``expired=True``: only expired rows (``exp_time <= now``), of *aor* if given;
    * *aor* alone: every row of that account;
    * neither: EVERY row of the table (the CLI should confirm first).
    """
    now = int(time.time())
    if _is_server(config):
        return _server_purge(config, aor, expired, now)
    with _session(config) as ops, write_txn(ops.conn):
        t = ops.table
        if aor:
            user, domain = parse_aor(aor)
            if expired:
                return ops.conn.execute(
                    f"DELETE FROM {t} WHERE username = ? AND domain = ? AND exp_time <= ?",
                    (user, domain, now),
                ).rowcount
            return ops.purge_account(user, domain)
        if expired:
            return ops.purge_expired(now)
        return ops.conn.execute(f"DELETE FROM {t}").rowcount


def _server_purge(config: Any, aor: str | None, expired: bool, now: int) -> int:
    if aor:
        user, domain = parse_aor(aor)
        if expired:
            return _server_op(
                config,
                lambda s: s.purge_where(
                    "username = %s AND domain = %s AND exp_time <= %s", (user, domain, now)
                ),
            )
        return _server_op(config, lambda s: s.purge_account(user, domain))
    if expired:
        return _server_op(config, lambda s: s.purge_expired(now))
    return _server_op(config, lambda s: s.purge_where("1 = 1"))

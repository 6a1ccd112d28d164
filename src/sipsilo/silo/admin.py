"""Message-store administration for the CLI, and the store factory.

The functions are synchronous and open their own short-lived connection, so they work
while a server is running on the same database: SQLite's WAL lets them read beside the
server, and ``busy_timeout`` makes their writes wait for the server's write lock instead
of failing.  From the configuration only ``config.msilo.db_url``,
``config.msilo.db_table`` and ``config.data_dir`` are used.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from .schema import LATEST_VERSION, check_identifier, current_version, migrate
from .sqlite import SqliteOps, SqliteSiloStore, connect, write_txn
from .store import SiloStore, StoreConfigError, StoreError

__all__ = [
    "SqliteUrl",
    "db_init",
    "db_migrate",
    "delete_message",
    "list_messages",
    "open_store",
    "parse_aor",
    "parse_db_url",
    "purge",
    "show_message",
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
            f"unsupported db_url scheme {scheme!r} in {_mask(db_url)!r}: "
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


def _mask(url: str) -> str:
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.split(':', 1)[0]}:***@{tail}"


def open_store(db_url: str, table: str = "silo", data_dir: str | Path | None = None) -> SiloStore:
    """The store backend for *db_url* (not opened yet: ``await store.open()``)."""
    url = parse_db_url(db_url, data_dir)
    try:
        check_identifier(table)
    except ValueError as e:
        raise StoreConfigError(str(e)) from None
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


def _as_dict(msg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(msg)
    d["aor"] = f"{msg.username}@{msg.domain}"
    return d


# --------------------------------------------------------------------------- commands


def db_init(config: Any) -> int:
    """Create the database and tables if missing (idempotent); return the schema version."""
    with _session(config, create=True) as ops:
        return migrate(ops.conn, "sqlite", ops.table)[1]


def db_migrate(config: Any) -> tuple[int, int]:
    """Apply pending migrations; return (version before, version after)."""
    with _session(config, create=True) as ops:
        return migrate(ops.conn, "sqlite", ops.table)


def list_messages(config: Any, aor: str | None = None, limit: int = 10000) -> list[dict[str, Any]]:
    """Stored rows in id order, of one AoR or all.  Each dict has the StoredMessage fields
    (``body`` as bytes, ``ctype`` the full Content-Type) plus ``aor`` = "user@domain"."""
    user, domain = parse_aor(aor) if aor else (None, None)
    with _session(config) as ops:
        return [_as_dict(m) for m in ops.list(user, domain, limit)]


def show_message(config: Any, id: int) -> dict[str, Any] | None:
    with _session(config) as ops:
        m = ops.get(int(id))
        return _as_dict(m) if m else None


def delete_message(config: Any, id: int) -> bool:
    with _session(config) as ops, write_txn(ops.conn):
        return ops.delete(int(id))


def purge(config: Any, aor: str | None = None, expired: bool = False) -> int:
    """Delete rows; return how many.

    * ``expired=True``: only expired rows (``exp_time <= now``), of *aor* if given;
    * *aor* alone: every row of that account;
    * neither: EVERY row of the table (the CLI should confirm first).
    """
    now = int(time.time())
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

"""The message store the configuration asks for."""

from __future__ import annotations

from pathlib import Path

from sipsilo.db.base import open_pool
from sipsilo.db.errors import StoreConfigError, StoreUnavailable
from sipsilo.db.schema import check_identifier
from sipsilo.db.url import DbUrl, parse_db_url

from .store import SiloStore


def open_store(
    db_url: DbUrl | str,
    table: str = "silo",
    data_dir: str | Path | None = None,
    *,
    pool_min: int = 1,
    pool_max: int = 10,
) -> SiloStore:
    """The store backend for *db_url* (not opened yet: ``await store.open()``, or
    :func:`open_configured`).

    SQLite -> :class:`~sipsilo.silo.sqlite.SqliteSiloStore`; MySQL/MariaDB and
    PostgreSQL -> :class:`~sipsilo.silo.sqlstore.SqlSiloStore` with a pool of
    *pool_min*..*pool_max* connections.  A string is parsed here (*data_dir* resolves
    a relative SQLite path); the server passes the configuration's parsed URL."""
    try:
        check_identifier(table)
    except ValueError as e:
        raise StoreConfigError(str(e)) from None
    url = db_url if isinstance(db_url, DbUrl) else parse_db_url(db_url, data_dir=data_dir)
    if url.is_server:
        from .sqlstore import SqlSiloStore

        return SqlSiloStore(open_pool(url, pool_min, pool_max), table)
    from .sqlite import SqliteSiloStore

    return SqliteSiloStore(url.path, table, synchronous=url.synchronous,
                           busy_timeout=url.busy_timeout)


async def open_configured(url: DbUrl, table: str, pool_min: int, pool_max: int) -> SiloStore:
    """:func:`open_store`, opened; a database that cannot be reached is one line naming
    the configuration key."""
    store = open_store(url, table, pool_min=pool_min, pool_max=pool_max)
    try:
        await store.open()
    except StoreUnavailable as exc:
        raise url.unavailable(exc) from None
    return store


__all__ = ["open_configured", "open_store"]

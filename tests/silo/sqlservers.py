"""The real database servers the backend tests run against, and per-run isolation.

URLs come from SIPSILO_TEST_MYSQL_URL / SIPSILO_TEST_PG_URL (defaults: the local
MariaDB and PostgreSQL of the dev and CI machines).  An unreachable server skips the
test with the reason, except under CI (``CI`` set), where it fails: there the servers
are part of the environment and a silent skip would hide a broken backend.

Every test gets its own table (``silo_t<random>``) or database, dropped afterwards,
so parallel runs never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
from typing import Any

import pytest

from sipsilo.db.base import open_pool, run_txn
from sipsilo.db.errors import StoreError
from sipsilo.db.url import parse_db_url as parse_sql_url

URLS = {
    "mysql": os.environ.get("SIPSILO_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    "postgresql": os.environ.get(
        "SIPSILO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
}
SERVER_DIALECTS = ("mysql", "postgresql")


async def sql(url: str, statement: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Run one statement on a fresh connection (as another process would)."""
    pool = open_pool(parse_sql_url(url), 1, 1)
    await pool.open()
    try:
        if statement.lstrip()[:6].upper() == "SELECT":
            return await run_txn(pool, lambda c: c.fetch(statement, args), txn=False)
        await run_txn(pool, lambda c: c.execute(statement, args), txn=False)
        return []
    finally:
        await pool.close()


@functools.cache
def _unreachable(dialect: str) -> str | None:
    try:
        asyncio.run(sql(URLS[dialect], "SELECT 1"))
    except StoreError as e:
        return str(e)
    return None


def server_url(dialect: str) -> str:
    """The URL of the *dialect* server, or skip/fail (CI) when it is unreachable."""
    why = _unreachable(dialect)
    if why is not None:
        message = f"{dialect} server not reachable ({why}); start it with scripts/services.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return URLS[dialect]


def unique_table() -> str:
    return f"silo_t{secrets.token_hex(5)}"


async def drop_table(url: str, table: str) -> None:
    """Drop a test table and its version rows."""
    await sql(url, f"DROP TABLE IF EXISTS {table}")
    for stmt, arg in (
        ("DELETE FROM version WHERE table_name = %s", table),
        ("DELETE FROM sipsilo_version WHERE component = %s", f"silo:{table}"),
    ):
        with contextlib.suppress(StoreError):  # the version tables were never created
            await sql(url, stmt, (arg,))


def database_url(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


async def create_database(dialect: str) -> tuple[str, str]:
    """A fresh database on the *dialect* server: (its URL, its name).
    Call server_url(dialect) first (outside any event loop) to skip/fail cleanly."""
    base = URLS[dialect]
    name = f"sipsilo_t{secrets.token_hex(5)}"
    await sql(base, f"CREATE DATABASE {name}")
    return database_url(base, name), name


async def drop_database(dialect: str, name: str) -> None:
    base = URLS[dialect]
    if dialect == "postgresql":
        # Connections of a killed server may linger for a moment.
        await sql(
            base,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (name,),
        )
    force = " WITH (FORCE)" if dialect == "postgresql" else ""
    await sql(base, f"DROP DATABASE IF EXISTS {name}{force}")

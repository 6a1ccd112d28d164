"""PushStore on SQLite, MariaDB and PostgreSQL: migration 4 creates the push-target
table; targets are kept, replaced, forgotten; reminders are claimed once, deleted when
sent, handed back to the dump when not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.silo.helpers import msg, run
from tests.silo.sqlservers import drop_table, server_url, sql, unique_table

from sipsilo.db.base import open_pool
from sipsilo.db.migrate import migrate_pool
from sipsilo.db.schema import push_table_name as table_name
from sipsilo.db.url import parse_db_url as parse_sql_url
from sipsilo.push.store import PushStore, PushTarget
from sipsilo.silo.backend import open_store
from sipsilo.silo.store import SiloStore


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/silo.db", "silo"
        return
    url, table = server_url(request.param), unique_table()
    yield url, table
    asyncio.run(sql(url, f"DROP TABLE IF EXISTS {table_name(table)}"))
    asyncio.run(drop_table(url, table))


async def _migrated(url: str, table: str) -> None:
    if url.startswith("sqlite"):
        return  # the SQLite store migrates when it opens
    pool = open_pool(parse_sql_url(url), 1, 1)
    await pool.open()
    try:
        assert (await migrate_pool(pool, table))[1] == 4
    finally:
        await pool.close()


async def _open(url: str, table: str) -> tuple[SiloStore, PushStore]:
    """The migrated message store and a PushStore beside it."""
    await _migrated(url, table)
    silo = open_store(url, table)
    await silo.open()
    # Migration 4 made the table, before any PushStore opened.
    count = await sql(url, f"SELECT COUNT(*) FROM {table_name(table)}")
    assert [tuple(r) for r in count] == [(0,)]
    store = PushStore(url, table, None, keep_days=30)
    await store.open()
    return silo, store


def test_targets(where: tuple[str, str]) -> None:
    url, table = where

    async def body() -> None:
        silo, store = await _open(url, table)
        try:
            aor = "sip:bob@example.com"
            assert await store.get(aor, 1000) is None
            await store.save(PushTarget(aor, "fcm", "T1", "P", "", 1000))
            await store.save(PushTarget(aor, "apns", "T2", "team.app", "purr", 2000))
            assert await store.get(aor, 2000) == PushTarget(aor, "apns", "T2", "team.app",
                                                            "purr", 2000)
            assert not await store.remove(aor, "T1")  # an older token: the new one stays
            assert await store.get(aor, 2000) is not None
            assert await store.get(aor, 2000 + 30 * 86400) is None  # too old to use
            assert await store.purge(2000 + 30 * 86400) == 1
            await store.save(PushTarget(aor, "fcm", "T3", "", "", 3000))
            assert await store.remove(aor, "T3")
            assert await store.get(aor, 3000) is None
        finally:
            await store.close()
            await silo.close()

    run(body)


def test_reminders(where: tuple[str, str]) -> None:
    url, table = where

    async def body() -> None:
        silo, store = await _open(url, table)
        try:
            first = await silo.store(msg(1))
            second = await silo.store(msg(2))
            await store.set_send_time(first, 5000)
            await store.set_send_time(second, 6000)
            assert await silo.count_for("bob", "example.com", 1000) == 0  # not dumped
            assert await store.claim_due(4999, "me", 9000) == []
            due = await store.claim_due(6000, "me", 9000)
            assert [d.id for d in due] == [first, second]
            assert due[0].body == b"hello 1\r\n" and due[0].dst_addr == "sip:bob@example.com"
            assert await store.claim_due(6000, "other", 9000) == []  # claimed already
            await store.reminder_sent(first, "me")
            await store.reminder_failed(second, "me")
            rows = await silo.list_messages()
            assert [r.id for r in rows] == [second]
            assert rows[0].snd_time == 0 and rows[0].claim_owner is None
            assert await silo.count_for("bob", "example.com", 1000) == 1  # dumped next time
        finally:
            await store.close()
            await silo.close()

    run(body)

"""silo.cluster: the SQL instances on one database share (issue 16), on SQLite,
MariaDB and PostgreSQL: heartbeat rows, the counts of `sipsilo cluster status`,
and "is another instance delivering to this user?"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sipsilo.db.base import open_pool
from sipsilo.db.url import parse_db_url as parse_sql_url
from sipsilo.silo.backend import open_store
from sipsilo.silo.cluster import (
    INSTANCES_TABLE,
    Heartbeat,
    bindings_per_process,
    claims_per_owner,
    live_instances,
    status_rows,
)
from tests.silo.helpers import msg, run
from tests.silo.sqlservers import server_url, sql, unique_table


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/c.db"
        return
    yield server_url(request.param)


def test_heartbeats_live_and_stale_and_gone(url: str) -> None:
    async def main() -> None:
        pool = open_pool(parse_sql_url(url), 1, 2)
        await pool.open()
        names = [f"t-{unique_table()}-{n}" for n in range(2)]
        try:
            a = Heartbeat(pool, names[0], "sip:10.0.0.1:5070;transport=tcp;o=aa", "1.0")
            b = Heartbeat(pool, names[1], None, "1.0")
            await a.open()
            await b.open()
            await b.beat(now=a.started_at - 60)  # b last seen a minute ago
            live = [r for r in await live_instances(pool, a.started_at + 1, 20)
                    if r.name in names]
            assert [r.name for r in live] == [names[0]]
            assert live[0].hop == "sip:10.0.0.1:5070;transport=tcp;o=aa"
            rows = status_rows(live, {names[0]: 3}, {names[0]: 2}, a.started_at + 1)
            assert rows[0]["bindings"] == 3 and rows[0]["claims"] == 2
            assert rows[0]["seen_seconds_ago"] <= 1.5
            await a.leave()
            assert names[0] not in [r.name for r in
                                    await live_instances(pool, a.started_at + 1, 20)]
        finally:
            async with pool.acquire() as c:
                for n in names:
                    await c.execute(f"DELETE FROM {INSTANCES_TABLE} WHERE name = %s", (n,))
            await pool.close()

    run(main)


def test_counts_by_process_and_claims_elsewhere(url: str) -> None:
    table = unique_table()

    async def main() -> None:
        store = open_store(url, table)
        await store.open()
        pool = open_pool(parse_sql_url(url), 1, 1)
        await pool.open()
        try:
            for n in range(3):
                await store.store(msg(n))
            claimed = await store.claim_batch("bob", "example.com", "inst0/w0", 1000, 60, 2)
            assert len(claimed) == 2
            assert await claims_per_owner(pool, table, 1000) == {"inst0/w0": 2}
            assert await claims_per_owner(pool, table, 2000) == {}  # lapsed
            # every backend, SQLite too (instances on one host may share a file)
            # m2 is stored and not tried yet: on its way for everybody
            assert await store.pending_elsewhere("bob", "example.com", "inst0/w0", 1000)
            assert await store.pending_elsewhere("bob", "example.com", "inst1", 1000)
            assert not await store.pending_elsewhere("eve", "example.com", "inst1", 1000)
            third = await store.claim_batch("bob", "example.com", "inst0/w0", 1000, 60, 1)
            assert len(third) == 1
            # all three claimed by inst0/w0: pending for others, not for it
            assert await store.pending_elsewhere("bob", "example.com", "inst1", 1000)
            assert not await store.pending_elsewhere("bob", "example.com", "inst0/w0",
                                                     1000)
            # given back after a failed try: left for the next REGISTER
            await store.release_many([m.id for m in claimed + third], "inst0/w0")
            assert not await store.pending_elsewhere("bob", "example.com", "inst1", 1000)
            loc = f"loc_{table}"
            async with pool.acquire() as c:
                await c.execute(f"CREATE TABLE {loc} (instance VARCHAR(128),"
                                " expires_at DOUBLE PRECISION)".replace(
                                    "DOUBLE PRECISION", "DOUBLE" if pool.dialect == "mysql"
                                    else "DOUBLE PRECISION"))
                for inst, exp in (("inst0|h:1:aa", 5000), ("inst0|h:2:bb", 5000),
                                  ("inst1|h:3:cc", 5000), ("inst1|h:3:cc", 10)):
                    await c.execute(f"INSERT INTO {loc} VALUES (%s, %s)", (inst, exp))
            assert await bindings_per_process(pool, loc, 1000) == {"inst0": 2, "inst1": 1}
        finally:
            if not url.startswith("sqlite"):
                await sql(url, f"DROP TABLE IF EXISTS loc_{table}")
                await sql(url, f"DROP TABLE IF EXISTS {table}")
            await pool.close()
            await store.close()

    run(main)




def test_statements_to_a_server_database_are_counted_for_capacity_planning(url: str) -> None:
    # sipsilo_db_statements_total (docs/scaling.md): one per statement sent to
    # PostgreSQL or MariaDB; SQLite, in-process, costs no database server.
    from sipsilo.db.base import STATEMENTS

    table = unique_table()

    async def main() -> None:
        store = open_store(url, table)
        await store.open()
        try:
            before = STATEMENTS.n
            await store.store(msg(1))
            await store.count_for("bob", "example.com", 1000)
            sent = STATEMENTS.n - before
            assert sent == 0 if url.startswith("sqlite") else sent >= 2
        finally:
            await store.close()
            if not url.startswith("sqlite"):
                await sql(url, f"DROP TABLE IF EXISTS {table}")

    run(main)

"""Kamailio compatibility on MariaDB and PostgreSQL, URL escapes, and a database that
goes away while the store runs (through a TCP relay the test can cut)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator

import pytest

from sipsilo.admin import silo as admin
from sipsilo.config import Config, load_config
from sipsilo.db.errors import StoreUnavailable
from sipsilo.db.schema import LATEST_VERSION, full_ddl
from sipsilo.db.url import parse_db_url as parse_sql_url
from sipsilo.silo.backend import open_store
from sipsilo.silo.store import StoreError

from .helpers import msg, run
from .sqlservers import drop_table, server_url, sql, unique_table

# Kamailio 5.6 msilo's statements (reference section 2), with the drivers' placeholders.
K_INSERT = (
    "insert into {t} (username,domain,dst_addr,src_addr,body,ctype,exp_time,inc_time,"
    "snd_time,extra_hdrs ) values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)
K_SELECT = (
    "select id,src_addr,dst_addr,body,ctype,inc_time,extra_hdrs from {t} "
    "where username=%s AND domain=%s AND snd_time=%s order by id"
)
K_VERSION = "select table_version from version where table_name=%s"


@pytest.fixture(params=["mysql", "postgresql"])
def target(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    url, table = server_url(request.param), unique_table()
    yield url, table
    asyncio.run(drop_table(url, table))


def config(url: str, table: str) -> Config:
    return load_config(None, [f"msilo.db_url={url}", f"msilo.db_table={table}"], env={})


def test_db_init_is_idempotent_and_kamailio_sees_version_8(target: tuple[str, str]) -> None:
    url, table = target
    assert admin.db_init(config(url, table)) == LATEST_VERSION
    assert admin.db_init(config(url, table)) == LATEST_VERSION
    assert admin.db_migrate(config(url, table)) == (LATEST_VERSION, LATEST_VERSION)
    assert run(lambda: sql(url, K_VERSION, (table,))) == [(8,)]
    lines = admin.check_db(config(url, table))
    assert lines[0].endswith(f"table {table} at schema version {LATEST_VERSION}")


def test_rows_written_by_us_are_read_by_kamailio(target: tuple[str, str]) -> None:
    url, table = target

    async def main() -> list[tuple[object, ...]]:
        store = open_store(url, table)
        await store.open()
        try:
            await store.store(msg(1, ctype="text/plain; charset=utf-8", extra="X-A: 1\r\n"))
            await store.store(msg(2, body=b"\x00\xffbin"))
            await store.store(msg(3, user="carol"))
        finally:
            await store.close()
        return [tuple(r) for r in await sql(url, K_SELECT.format(t=table),
                                            ("bob", "example.com", 0))]

    rows = run(main)
    assert [(r[1], r[2], bytes(r[3]), r[4], r[5], r[6]) for r in rows] == [  # type: ignore[arg-type]
        ("sip:alice@example.com", "sip:bob@example.com", b"hello 1\r\n", "text/plain", 1000,
         "X-A: 1\r\n"),
        ("sip:alice@example.com", "sip:bob@example.com", b"\x00\xffbin", "text/plain", 1000, ""),
    ]


def test_rows_inserted_by_kamailio_are_delivered_by_us(target: tuple[str, str]) -> None:
    url, table = target

    async def main() -> None:
        # Kamailio's own DDL first: we adopt its table, adding our columns.
        for stmt in full_ddl(table, parse_sql_url(url).dialect)[:4]:
            await sql(url, stmt)
        await sql(url, f"ALTER TABLE {table} DROP COLUMN ctype_full")  # as Kamailio has it
        for i in range(2):
            await sql(url, K_INSERT.format(t=table), (
                "bob", "example.com", "sip:bob@example.com", "sip:alice@example.com",
                f"Kamailio {i}\r\n".encode(), "text/plain", 5000, 1000 + i, 0, "X-K: v\r\n"))
        store = open_store(url, table)
        await store.open()
        try:
            got = await store.claim_next("bob", "example.com", "A", 2000, 60)
            assert got is not None
            assert (got.body, got.ctype, got.extra_hdrs, got.inc_time) == (
                b"Kamailio 0\r\n", "text/plain", "X-K: v\r\n", 1000)
            assert await store.confirm(got.id, "A")
            second = await store.claim_next("bob", "example.com", "A", 2000, 60)
            assert second is not None and second.body == b"Kamailio 1\r\n"
        finally:
            await store.close()

    run(main)


def test_mysql_password_with_url_escapes() -> None:
    base = server_url("mysql")
    user, password = f"sipsilo_{secrets.token_hex(3)}", "p@ss:w/rd%"
    run(lambda: sql(base, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
    try:
        run(lambda: sql(base, f"GRANT ALL ON test.* TO '{user}'@'%'"))
        escaped = base.replace("root@", f"{user}:p%40ss%3Aw%2Frd%25@")
        assert run(lambda: sql(escaped, "SELECT CURRENT_USER()"))[0][0].startswith(user)
        wrong = base.replace("root@", f"{user}:nope@")
        with pytest.raises(StoreUnavailable, match=r"^cannot connect to mysql://sipsilo_\w+:\*\*\*@"
                           r".*Access denied"):
            run(lambda: sql(wrong, "SELECT 1"))
    finally:
        run(lambda: sql(base, f"DROP USER '{user}'@'%'"))


class Relay:
    """A TCP relay to the database that the test can cut and restore (the "outage")."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.close()
            return
        self.writers += [w, uw]
        await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port or 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        self.writers = []
        await self.server.wait_closed()


def test_database_outage_then_recovery(target: tuple[str, str]) -> None:
    url, table = target
    u = parse_sql_url(url)

    async def main() -> None:
        relay = Relay(u.host, u.port)
        await relay.up()
        via = url.replace(f":{u.port}/", f":{relay.port}/")
        store = open_store(via, table, pool_min=1, pool_max=4)
        await store.open()
        try:
            acked = [await store.store(msg(i)) for i in range(5)]
            await relay.down()
            with pytest.raises(StoreError):  # the route turns this into a 503
                await store.store(msg(99))
            with pytest.raises(StoreError):  # a delivery attempt: nothing claimed
                await store.claim_next("bob", "example.com", "A", 2000, 60)
            await relay.up()  # the server is back: the pool reconnects by itself
            for _ in range(3):
                with contextlib.suppress(StoreUnavailable):
                    acked.append(await store.store(msg(100)))
                    break
            got = await store.claim_next("bob", "example.com", "A", 2000, 60)
            assert got is not None and got.id == acked[0]
            assert [m.id for m in await store.list_messages()] [:len(acked)] == acked  # none lost
        finally:
            await store.close()
            await relay.down()

    run(main)

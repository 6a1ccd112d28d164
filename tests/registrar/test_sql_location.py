"""SqlLocationService on SQLite, MariaDB and PostgreSQL: the LocationService contract,
and bindings shared between two instances (a MESSAGE at A finds bob registered at B)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.silo.helpers import run
from tests.silo.sqlservers import server_url, sql, unique_table

from sipsilo.config import Config, load_config
from sipsilo.db.base import open_pool
from sipsilo.db.errors import StoreUnavailable
from sipsilo.db.url import parse_db_url as parse_sql_url
from sipsilo.flow import Flow
from sipsilo.registrar.binding import Binding
from sipsilo.registrar.location import MemoryLocationService
from sipsilo.registrar.sql_location import SqlLocationService, create_sql, open_location


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/loc.db", "sipsilo_location"
        return
    url, table = server_url(request.param), "loc_" + unique_table()
    yield url, table
    asyncio.run(sql(url, f"DROP TABLE IF EXISTS {table}"))


async def instance(url: str, table: str, name: str) -> SqlLocationService:
    svc = SqlLocationService(open_pool(parse_sql_url(url), 1, 2), name, table)
    await svc.open()
    return svc


def binding(contact: str, *, exp: float = 2000.0, q: float = 1.0, reg_id: int | None = None,
            transport: str = "udp", conn_id: int | None = None) -> Binding:
    return Binding(
        aor="sip:bob@example.com", contact=contact,
        params=(("expires", "3600"), ("+sip.instance", '"<urn:uuid:1>"'), ("ob", None)),
        expires_at=exp, call_id="c1@h", cseq=7,
        flow=Flow(transport, ("127.0.0.1", 5060), ("192.0.2.9", 40000), conn_id),
        q=q, user_agent="UA/1", methods=frozenset({"MESSAGE", "INVITE"}),
        instance_id="<urn:uuid:1>", reg_id=reg_id, registered_at=1000.5,
    )


def test_contract(where: tuple[str, str]) -> None:
    async def main() -> None:
        loc = await instance(*where, "A")
        try:
            b1 = binding("sip:bob@192.0.2.1:5070", q=0.5, conn_id=3)
            b2 = binding("sip:bob@192.0.2.2:5070", exp=1500.0)
            await loc.save(b1)
            await loc.save(b2)
            assert await loc.lookup("sips:bob@EXAMPLE.com", 1000) == [b2, b1]  # q order
            assert await loc.lookup("sip:bob@example.com", 1600) == [b1]  # b2 expired
            await loc.save(binding("sip:bob@192.0.2.1:5070", q=0.9, exp=3000.0))  # refresh
            assert [(b.q, b.expires_at) for b in await loc.list("sip:bob@example.com")] == [
                (1.0, 1500.0), (0.9, 3000.0)]
            assert await loc.expire(1600) == [b2]
            assert await loc.expire(1600) == []
            assert await loc.remove("sip:bob@example.com", "sip:nobody@x") is None
            gone = await loc.remove("sip:bob@example.com", "sip:bob@192.0.2.1:5070")
            assert gone is not None and gone.q == 0.9
            await loc.save(b1)
            assert await loc.remove_all("sip:bob@example.com") == [b1]
            assert await loc.list() == []
        finally:
            await loc.aclose()

    run(main)


def test_two_instances_share_bindings_but_not_flows(where: tuple[str, str]) -> None:
    async def main() -> None:
        a, b = await instance(*where, "A"), await instance(*where, "B")
        try:
            await b.save(binding("sip:bob@192.0.2.7:5099", reg_id=1, conn_id=12))
            await b.save(binding("sip:bob@192.0.2.8;transport=tcp", transport="tcp", conn_id=13))
            own = await b.lookup("sip:bob@example.com", 1000)
            assert {x.flow.conn_id for x in own} == {12, 13}  # B's own flows, intact
            seen = {x.contact: x for x in await a.lookup("sip:bob@example.com", 1000)}
            udp = seen["sip:bob@192.0.2.7:5099"].flow
            # A cannot use B's socket: straight to the Contact, no connection id.
            assert (*udp.remote, udp.conn_id) == ("192.0.2.7", 5099, None)
            assert seen["sip:bob@192.0.2.8;transport=tcp"].flow.conn_id is None
            # Both sweep at once: each expired binding is reported by one of them.
            swept = await asyncio.gather(a.expire(5000), b.expire(5000))
            assert sum(len(s) for s in swept) == 2
        finally:
            await a.aclose()
            await b.aclose()

    run(main)


def test_factory(tmp_path: Path) -> None:
    def cfg(url: str | None) -> Config:
        return load_config(None, [f"registrar.db_url={url or ''}", "msilo.db_pool_min=1",
                                  "msilo.db_pool_max=2"], env={}, data_dir=tmp_path)

    async def main() -> None:
        assert isinstance(await open_location(cfg(None)), MemoryLocationService)
        svc = await open_location(cfg("sqlite:///loc.db"))
        assert isinstance(svc, SqlLocationService)
        await svc.aclose()
        assert (tmp_path / "loc.db").exists()
        with pytest.raises(StoreUnavailable, match=r"^registrar\.db_url: cannot connect to "
                           r"postgresql://u:\*\*\*@127\.0\.0\.1:1/db: Connection refused$"):
            await open_location(cfg("postgresql://u:pw@127.0.0.1:1/db"))

    run(main)


def test_a_binding_with_an_owner_hop_keeps_its_flow_for_other_instances(
        where: tuple[str, str]) -> None:
    """Issue 16: another instance relays to the owner's hop, which needs the flow's
    connection number and peer address (routing.handover signs them)."""
    async def main() -> None:
        a, b = await instance(*where, "A"), await instance(*where, "B")
        try:
            hop = "sip:10.0.0.2:5070;transport=tcp;o=ab12"
            owned = binding("sip:bob@x.invalid;transport=tcp", transport="tcp", conn_id=13,
                            reg_id=1)
            owned = dataclasses.replace(owned, flow=Flow(
                "tcp", ("127.0.0.1", 5060), ("192.0.2.9", 40000), 13, hop))
            await b.save(owned)
            seen = await a.lookup("sip:bob@example.com", 1000)
            assert [x.flow for x in seen] == [owned.flow]
            assert await b.lookup("sip:bob@example.com", 1000) == [owned]
        finally:
            await a.aclose()
            await b.aclose()

    run(main)


def test_a_table_made_before_the_owner_column_gets_it(where: tuple[str, str]) -> None:
    async def main() -> None:
        url, table = where
        pool = open_pool(parse_sql_url(url), 1, 1)
        await pool.open()
        try:
            old = [s.replace(",\n        owner VARCHAR(255)", "")
                   for s in create_sql(table, pool.dialect)]
            old = [s.replace(",\n    owner VARCHAR(255)", "") for s in old]
            assert all("owner" not in s for s in old)
            async with pool.acquire() as conn:
                for s in old:
                    await conn.execute(s)
        finally:
            await pool.close()
        loc = await instance(url, table, "A")
        try:
            b1 = binding("sip:bob@192.0.2.1:5070")
            await loc.save(b1)
            assert await loc.lookup("sip:bob@example.com", 1000) == [b1]
        finally:
            await loc.aclose()

    run(main)

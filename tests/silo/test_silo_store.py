"""SqliteSiloStore: store, claims, ordering, expiry, admin-style operations."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from sipsilo.db.sqlite import connect
from sipsilo.silo.ops import MessageOps
from sipsilo.silo.sqlite import SqliteSiloStore
from sipsilo.silo.store import NewMessage, StoreError, media_type

from .helpers import msg, opened, raw, run


def test_roundtrip_fields_and_ctype(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db")
        m = msg(1, ctype="text/plain; charset=UTF-8", extra="X-Test-Id: e5\r\nPriority: urgent\r\n")
        rid = await s.store(m)
        got = await s.get(rid)
        assert got is not None
        assert (got.src_addr, got.dst_addr, got.username, got.domain) == (
            m.src_addr,
            m.dst_addr,
            "bob",
            "example.com",
        )
        assert (got.inc_time, got.exp_time, got.snd_time, got.status) == (1000, 10_000, 0, 0)
        assert got.ctype == "text/plain; charset=UTF-8"  # full value comes back
        assert got.extra_hdrs == m.extra_hdrs
        assert got.callid == "call-1"
        assert got.attempts == 0 and got.claim_owner is None
        await s.close()
        # Kamailio's column holds type/subtype only.
        c = raw(tmp_path / "m.db")
        assert c.execute("select ctype, ctype_full from silo").fetchone() == (
            "text/plain",
            "text/plain; charset=UTF-8",
        )

    run(body)


def test_media_type_truncates_to_kamailio_width() -> None:
    long = "application/" + "x" * 40 + "; a=b"
    assert len(media_type(long)) == 32
    assert media_type(" text/html ;charset=x") == "text/html"


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x01\x02\xff\xfe\x00",
        b"line1\r\nline2\r\n\r\n",
        "caf\u00e9".encode("latin-1"),  # not UTF-8
        bytes(range(256)) * 300,  # 76.8 kB, every byte value
        b"",
    ],
)
def test_body_bytes_exact(tmp_path: Path, payload: bytes) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db")
        rid = await s.store(msg(body=payload, ctype="application/octet-stream"))
        got = await s.get(rid)
        assert got is not None and got.body == payload and type(got.body) is bytes
        await s.close()
        c = raw(tmp_path / "m.db")
        assert c.execute("select body from silo where id=?", (rid,)).fetchone()[0] == payload

    run(body)


def test_claim_confirm_release_order(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db")
        ids = [await s.store(msg(i)) for i in range(3)]
        await s.store(msg(9, user="carol"))
        now = 2000
        a = await s.claim_next("bob", "example.com", "A", now, 30)
        assert a is not None and a.id == ids[0]
        assert (a.claim_owner, a.claim_until, a.attempts) == ("A", now + 30, 1)
        # Another instance must not overtake the message in flight.
        assert await s.claim_next("bob", "example.com", "B", now, 30) is None
        # Other accounts are independent.
        c = await s.claim_next("carol", "example.com", "B", now, 30)
        assert c is not None and c.username == "carol"
        # Failed delivery: released, kept, and retried first (attempts counts).
        assert await s.release(a.id, "A")
        b = await s.claim_next("bob", "example.com", "B", now, 30)
        assert b is not None and b.id == ids[0] and b.attempts == 2
        assert not await s.confirm(b.id, "A")  # A no longer holds it
        assert await s.confirm(b.id, "B")
        assert await s.get(b.id) is None
        nxt = await s.claim_next("bob", "example.com", "A", now, 30)
        assert nxt is not None and nxt.id == ids[1]
        # The holder itself may pipeline; its own claim does not block it.
        nxt2 = await s.claim_next("bob", "example.com", "A", now, 30)
        assert nxt2 is not None and nxt2.id == ids[2]
        assert await s.claim_next("bob", "example.com", "A", now, 30) is None
        assert await s.count_for("bob", "example.com", now) == 2
        await s.close()

    run(body)


def test_claim_lease_expiry_retake(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db")
        rid = await s.store(msg(1))
        await s.store(msg(2))
        a = await s.claim_next("bob", "example.com", "A", 100, 30)
        assert a is not None and a.claim_until == 130
        # Still held at exactly claim_until; free once it is in the past.
        assert await s.claim_next("bob", "example.com", "B", 130, 30) is None
        b = await s.claim_next("bob", "example.com", "B", 131, 30)
        assert b is not None and b.id == rid and b.claim_owner == "B" and b.attempts == 2
        # The crashed holder coming back cannot confirm or release B's claim.
        assert not await s.confirm(rid, "A")
        assert not await s.release(rid, "A")
        assert (await s.get(rid)) is not None
        await s.close()

    run(body)


def test_expired_never_claimed_and_purged(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db")
        old = await s.store(msg(1, exp=500))
        edge = await s.store(msg(2, exp=600))
        live = await s.store(msg(3, exp=5000))
        claimed_then_expired = await s.store(msg(4, user="dave", exp=700))
        d = await s.claim_next("dave", "example.com", "A", 650, 300)
        assert d is not None and d.id == claimed_then_expired
        now = 600  # exp_time <= now is expired, as Kamailio's purge defines it
        assert await s.count_for("bob", "example.com", now) == 1
        got = await s.claim_next("bob", "example.com", "A", now, 30)
        assert got is not None and got.id == live
        await s.release(live)
        # An expired claimed row is not a blocker either: it is simply gone.
        assert await s.claim_next("dave", "example.com", "B", 700, 30) is None
        assert await s.purge_expired(700) == 3
        ids = [m.id for m in await s.list_messages()]
        assert ids == [live] and old not in ids and edge not in ids
        assert not await s.confirm(claimed_then_expired, "A")
        await s.close()

    run(body)


def test_reminders_are_never_claimed(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db")
        c = raw(tmp_path / "m.db")
        c.execute(
            "insert into silo (username,domain,dst_addr,src_addr,body,ctype,exp_time,"
            "inc_time,snd_time,extra_hdrs) values ('bob','example.com','sip:bob@example.com',"
            "'sip:a@example.com',x'41','text/plain',9999,1,1500,'')"
        )
        assert await s.claim_next("bob", "example.com", "A", 2000, 30) is None
        assert await s.count_for("bob", "example.com", 2000) == 0
        assert await s.count() == 1
        await s.close()

    run(body)


def test_list_get_delete_purge_account(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db")
        bob = [await s.store(msg(i)) for i in range(5)]
        carol = await s.store(msg(7, user="carol"))
        assert [m.id for m in await s.list_messages()] == [*bob, carol]
        assert [m.id for m in await s.list_messages("bob", "example.com")] == bob
        page1 = await s.list_messages("bob", "example.com", limit=2)
        page2 = await s.list_messages("bob", "example.com", limit=2, after_id=page1[-1].id)
        assert [m.id for m in page1 + page2] == bob[:4]
        assert await s.delete(bob[0]) and not await s.delete(bob[0])
        assert await s.get(bob[0]) is None
        assert await s.purge_account("bob", "example.com") == 4
        assert await s.count() == 1 and (await s.list_messages())[0].id == carol
        await s.close()

    run(body)


def test_hot_path_queries_use_indexes(tmp_path: Path) -> None:
    conn = connect(tmp_path / "m.db")
    from sipsilo.db.schema import migrate

    migrate(conn, "sqlite", "silo")
    ops = MessageOps("silo", "sqlite")
    plans = {
        "count_for": (ops.sql_count_for, ("b", "d", 1)),
        "count_from": (ops.sql_count_from, ("sip:a@d",)),
        "by_key": (ops.sql_by_key, ("k",)),
        "claim_scan": (ops.sql_claim_scan, ("b", "d", 1, 0)),
        "claim": (ops.sql_claim, ("o", 1, 1, 1, 1)),
        "get": (ops.sql_get, (1,)),
        "purge_expired": (ops.sql_purge_expired, (1,)),
    }
    for name, (sql, args) in plans.items():
        detail = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert "USING" in detail, (name, detail)  # index or primary key, not a bare SCAN
        assert "TEMP B-TREE" not in detail, (name, detail)  # no sort for ORDER BY id
    conn.close()


def test_failing_job_does_not_fail_its_batch(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db")
        bad = NewMessage("a", "b", "bob", "d", 1, 2, "text/plain", None, "", "")  # type: ignore[arg-type]
        results = await asyncio.gather(
            *(s.store(msg(i)) for i in range(50)), s.store(bad), return_exceptions=True
        )
        assert all(isinstance(r, int) for r in results[:50])
        assert isinstance(results[50], TypeError)
        assert await s.count() == 50
        await s.close()

    run(body)


def test_closed_store_raises(tmp_path: Path) -> None:
    async def body() -> None:
        s = SqliteSiloStore(tmp_path / "m.db")
        with pytest.raises(StoreError):
            await s.store(msg())
        await s.open()
        await s.close()
        await s.close()  # idempotent
        with pytest.raises(StoreError):
            await s.count()
        async with SqliteSiloStore(tmp_path / "m.db") as s2:  # reopen works
            assert await s2.count() == 0

    run(body)


def test_waits_for_another_writer_instead_of_locked_error(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db", busy_timeout=10.0)
        other = raw(tmp_path / "m.db")
        other.execute("BEGIN IMMEDIATE")  # the CLI or another server holds the write lock
        threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
        t0 = time.monotonic()
        rid = await s.store(msg())
        assert time.monotonic() - t0 >= 0.4
        assert await s.get(rid) is not None
        await s.close()

    run(body)


def test_lock_timeout_fails_batch_with_store_error(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db", busy_timeout=0.2)
        other = raw(tmp_path / "m.db")
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError):
                await s.store(msg())
        finally:
            other.execute("COMMIT")
        assert await s.store(msg()) > 0  # recovers once the lock is free
        await s.close()

    run(body)


def test_claim_batch_in_order_and_stops_at_a_foreign_claim(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db")
        ids = [await s.store(msg(i)) for i in range(6)]
        now = 2000
        first = await s.claim_batch("bob", "example.com", "A", now, 30, 4)
        assert [m.id for m in first] == ids[:4]
        assert all(m.claim_owner == "A" and m.attempts == 1 for m in first)
        # B sees the account's next row held by A: nothing, order is kept.
        assert await s.claim_batch("bob", "example.com", "B", now, 30, 10) == []
        # A delivered two, failed the third: those two go, the rest is freed.
        assert await s.confirm_many(ids[:2], "A") == 2
        assert await s.release_many(ids[2:4], "A") == 2
        assert await s.confirm_many(ids[2:4], "B") == 0  # nobody's claim: nothing
        again = await s.claim_batch("bob", "example.com", "B", now, 30, 10)
        assert [m.id for m in again] == ids[2:]
        await s.close()

    run(body)


def test_release_owner_frees_only_that_owners_claims(tmp_path: Path) -> None:
    async def body() -> None:
        s = await opened(tmp_path / "m.db")
        await s.store(msg(1))
        await s.store(msg(2, user="carol"))
        await s.claim_batch("bob", "example.com", "A", 100, 30, 5)
        await s.claim_batch("carol", "example.com", "B", 100, 30, 5)
        assert await s.release_owner("A") == 1
        held = {m.username: m.claim_owner for m in await s.list_messages()}
        assert held == {"bob": None, "carol": "B"}
        await s.close()

    run(body)

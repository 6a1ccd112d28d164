"""The SiloStore interface suite on every backend: SQLite, MariaDB/MySQL, PostgreSQL.

Server backends use a table of their own per test (dropped after), so parallel runs
do not collide; see sqlservers.py for skipping rules (never skipped under CI).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipsilo.db.errors import StoreUnavailable
from sipsilo.silo.backend import open_store
from sipsilo.silo.sqlstore import SqlSiloStore
from sipsilo.silo.store import NewMessage, SiloStore, StoreError

from .helpers import msg, run
from .sqlservers import drop_table, server_url, sql, unique_table


@dataclass
class Backend:
    dialect: str
    url: str
    table: str

    async def open(self, **kw: object) -> SiloStore:
        store = open_store(self.url, self.table, **kw)  # type: ignore[arg-type]
        await store.open()
        return store

    async def rows(self, statement: str, *args: object) -> list[tuple[object, ...]]:
        """Raw SQL on a separate connection; ``{t}`` is the table, ``%s`` placeholders."""
        statement = statement.format(t=self.table)
        if self.dialect == "sqlite":
            import sqlite3

            path = self.url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as c:
                cur = c.execute(statement.replace("%s", "?"), args)
                return [tuple(r) for r in cur.fetchall()]
        return [tuple(r) for r in await sql(self.url, statement, tuple(args))]


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path}/m.db", "silo")
        return
    b = Backend(request.param, server_url(request.param), unique_table())
    yield b
    asyncio.run(drop_table(b.url, b.table))


@pytest.fixture(params=["mysql", "postgresql"])
def server(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = Backend(request.param, server_url(request.param), unique_table())
    yield b
    asyncio.run(drop_table(b.url, b.table))


def with_store(backend: Backend, body: Callable[[SiloStore], Awaitable[None]]) -> None:
    async def main() -> None:
        s = await backend.open()
        try:
            await body(s)
        finally:
            await s.close()

    run(main)


# --------------------------------------------------------------------------- interface


def test_roundtrip_fields_and_ctype(backend: Backend) -> None:
    async def body(s: SiloStore) -> None:
        extra = "X-Test-Id: e5\r\nSubject: caf\u00e9\r\n"
        m = msg(1, ctype="text/plain; charset=UTF-8", extra=extra)
        rid = await s.store(m)
        got = await s.get(rid)
        assert got is not None
        assert (got.src_addr, got.dst_addr, got.username, got.domain) == (
            m.src_addr, m.dst_addr, "bob", "example.com")
        assert (got.inc_time, got.exp_time, got.snd_time, got.status) == (1000, 10_000, 0, 0)
        assert got.ctype == "text/plain; charset=UTF-8"
        assert got.extra_hdrs == m.extra_hdrs and got.callid == "call-1"
        assert got.attempts == 0 and got.claim_owner is None
        raw = await backend.rows("select ctype, ctype_full from {t} where id = %s", rid)
        assert raw == [("text/plain", "text/plain; charset=UTF-8")]

    with_store(backend, body)


@pytest.mark.parametrize(
    "payload",
    [b"\x00\x01\x02\xff\xfe\x00", b"line1\r\nline2\r\n\r\n", "caf\u00e9".encode("latin-1"),
     bytes(range(256)) * 200, b""],  # 51.2 kB: under MySQL BLOB's 64 kB
)
def test_body_bytes_exact(backend: Backend, payload: bytes) -> None:
    async def body(s: SiloStore) -> None:
        rid = await s.store(msg(body=payload, ctype="application/octet-stream"))
        got = await s.get(rid)
        assert got is not None and got.body == payload and type(got.body) is bytes
        raw = await backend.rows("select body from {t} where id = %s", rid)
        assert bytes(raw[0][0]) == payload  # type: ignore[arg-type]

    with_store(backend, body)


def test_claim_confirm_release_order(backend: Backend) -> None:
    async def body(s: SiloStore) -> None:
        ids = [await s.store(msg(i)) for i in range(3)]
        await s.store(msg(9, user="carol"))
        first = await s.claim_next("bob", "example.com", "A", 2000, 60)
        assert first is not None and first.id == ids[0]
        assert (first.claim_owner, first.claim_until, first.attempts) == ("A", 2060, 1)
        # Another instance must wait: an earlier message is in flight.
        assert await s.claim_next("bob", "example.com", "B", 2000, 60) is None
        # The holder itself may go on (its engine serialises).
        second = await s.claim_next("bob", "example.com", "A", 2000, 60)
        assert second is not None and second.id == ids[1]
        assert await s.confirm(first.id, "B") is False  # not B's claim
        assert await s.confirm(first.id, "A") is True
        assert await s.release(second.id, "A") is True
        again = await s.claim_next("bob", "example.com", "B", 2000, 60)
        assert again is not None and again.id == ids[1] and again.attempts == 2
        assert await s.count_for("bob", "example.com", 2000) == 2
        assert await s.count_for("carol", "example.com", 2000) == 1

    with_store(backend, body)


def test_claim_lease_expiry_retake(backend: Backend) -> None:
    async def body(s: SiloStore) -> None:
        rid = await s.store(msg())
        assert (await s.claim_next("bob", "example.com", "dead", 2000, 10)) is not None
        assert await s.claim_next("bob", "example.com", "B", 2010, 10) is None  # still held
        got = await s.claim_next("bob", "example.com", "B", 2011, 10)  # lapsed: retaken
        assert got is not None and got.id == rid and got.claim_owner == "B"
        assert await s.confirm(rid, "dead") is False
        assert await s.confirm(rid, "B") is True

    with_store(backend, body)


def test_expired_and_reminders_never_claimed_and_purged(backend: Backend) -> None:
    async def body(s: SiloStore) -> None:
        await s.store(msg(1, exp=1500))
        live = await s.store(msg(2, exp=5000))
        await backend.rows("update {t} set snd_time = 1 where id = %s", live)  # a reminder
        keep = await s.store(msg(3, exp=5000))
        got = await s.claim_next("bob", "example.com", "A", 1500, 60)
        assert got is not None and got.id == keep
        assert await s.count_for("bob", "example.com", 1500) == 1
        assert await s.purge_expired(1500) == 1
        assert await s.count() == 2

    with_store(backend, body)


def test_list_get_delete_purge_account(backend: Backend) -> None:
    async def body(s: SiloStore) -> None:
        ids = [await s.store(msg(i, user=u)) for i, u in enumerate(["bob", "carol", "bob"])]
        assert [m.id for m in await s.list_messages("bob", "example.com")] == [ids[0], ids[2]]
        assert [m.id for m in await s.list_messages(limit=2)] == ids[:2]
        assert [m.id for m in await s.list_messages(after_id=ids[0])] == ids[1:]
        assert await s.get(ids[1]) is not None and await s.get(10**6) is None
        assert await s.delete(ids[1]) is True and await s.delete(ids[1]) is False
        assert await s.purge_account("bob", "example.com") == 2
        assert await s.count() == 0

    with_store(backend, body)


def test_group_commit_batches_and_each_store_is_visible_on_return(backend: Backend) -> None:
    async def body(s: SiloStore) -> None:
        other = await backend.open()  # another connection (pool), as another process

        async def one(i: int) -> None:
            m = msg(i)
            rid = await s.store(m)
            got = await other.get(rid)  # durable (committed) on return ...
            assert got is not None and got.body == m.body  # ... and the id is this message's

        try:
            await asyncio.gather(*(one(i) for i in range(200)))
        finally:
            await other.close()
        assert s.stats.stores == 200
        assert s.stats.transactions < 200 and s.stats.max_batch > 1

    with_store(backend, body)


def test_batches_claim_confirm_release_and_release_owner(backend: Backend) -> None:
    async def body(s: SiloStore) -> None:
        ids = [await s.store(msg(i)) for i in range(6)]
        run1 = await s.claim_batch("bob", "example.com", "A", 2000, 60, 4)
        assert [m.id for m in run1] == ids[:4]
        assert await s.claim_batch("bob", "example.com", "B", 2000, 60, 4) == []
        assert await s.confirm_many(ids[:2], "B") == 0
        assert await s.confirm_many(ids[:2], "A") == 2
        assert await s.release_many([ids[2]], "A") == 1
        assert await s.release_owner("A") == 1  # ids[3]
        run2 = await s.claim_batch("bob", "example.com", "B", 2000, 60, 10)
        assert [m.id for m in run2] == ids[2:]

    with_store(backend, body)


def test_a_claim_whose_delivery_never_concluded_counts_as_waiting_again(
        backend: Backend) -> None:
    """A refused message keeps its attempt: it waits for the next REGISTER and
    does not hold live MESSAGEs back. Claims of a process that stopped or died
    before their answer give their attempt back: those messages are still on
    their way, and a live MESSAGE must queue behind them, not overtake them."""
    async def body(s: SiloStore) -> None:
        ids = [await s.store(msg(i)) for i in range(4)]
        assert await s.pending_elsewhere("bob", "example.com", "B", 2000)  # not tried yet
        await s.claim_batch("bob", "example.com", "A", 2000, 60, 4)
        assert await s.release_many([ids[0]], "A") == 1  # the phone refused it
        assert await s.release_many([ids[1]], "A", untried=True) == 1  # a shutdown
        assert await s.pending_elsewhere("bob", "example.com", "B", 2000)
        assert await s.release_owner("A") == 2  # a restart: ids[2:]
        attempts = {m.id: m.attempts for m in await s.list_messages("bob", "example.com")}
        assert attempts == {ids[0]: 1, ids[1]: 0, ids[2]: 0, ids[3]: 0}
        await s.claim_batch("bob", "example.com", "A", 2000, 60, 1)
        await s.release_many([ids[0]], "A")
        await s.confirm_many(ids[1:], None)
        # Only the refused one left: live MESSAGEs are relayed, not held back.
        assert not await s.pending_elsewhere("bob", "example.com", "B", 2000)

    with_store(backend, body)


def test_closed_store_raises(backend: Backend) -> None:
    async def main() -> None:
        s = await backend.open()
        await s.close()
        await s.close()  # idempotent
        with pytest.raises(StoreError):
            await s.store(msg())

    run(main)


# --------------------------------------------------------------------------- servers only


def test_one_bad_message_fails_alone_in_its_batch(server: Backend) -> None:
    async def body(s: SiloStore) -> None:
        bad = msg(0)
        bad.src_addr = "sip:" + "x" * 300  # VARCHAR(255): refused by both servers
        results = await asyncio.gather(
            *(s.store(msg(i)) for i in range(1, 20)), s.store(bad), return_exceptions=True
        )
        assert isinstance(results[-1], StoreError)
        assert all(isinstance(r, int) for r in results[:-1])
        assert await s.count() == 19

    with_store(server, body)


def test_two_instances_never_claim_the_same_row_and_keep_order(server: Backend) -> None:
    """Two stores = two pools = two instances, delivering one account at once."""

    async def main() -> None:
        a, b = await server.open(), await server.open()
        try:
            ids = [await a.store(msg(i)) for i in range(150)]
            delivered: list[int] = []
            claims: dict[str, list[int]] = {"A": [], "B": []}

            async def instance(s: SiloStore, owner: str) -> None:
                idle = 0
                while len(delivered) < len(ids) and idle < 400:
                    run = await s.claim_batch("bob", "example.com", owner, 2000, 60, 7)
                    if not run:
                        idle += 1
                        await asyncio.sleep(0.001)
                        continue
                    for m in run:
                        claims[owner].append(m.id)
                        delivered.append(m.id)
                        await asyncio.sleep(0)  # let the other instance try meanwhile
                    assert await s.confirm_many([m.id for m in run], owner) == len(run)

            await asyncio.gather(instance(a, "A"), instance(b, "B"))
            assert not set(claims["A"]) & set(claims["B"])
            assert delivered == ids  # each once, in stored order across instances
            # Which instance wins each race depends on scheduling, so whether
            # both took part is not asserted: exactly-once and order are.
        finally:
            await a.close()
            await b.close()

    run(main)


def test_purges_from_several_instances_do_not_conflict(server: Backend) -> None:
    async def main() -> None:
        stores = [await server.open() for _ in range(3)]
        try:
            await asyncio.gather(*(stores[0].store(msg(i, exp=1500 + i % 2 * 5000))
                                   for i in range(300)))
            counts = await asyncio.gather(*(s.purge_expired(2000) for s in stores))
            assert sum(counts) == 150
            assert await stores[1].count() == 150
        finally:
            for s in stores:
                await s.close()

    run(main)


def test_pool_size_comes_from_open_store(server: Backend) -> None:
    s = open_store(server.url, server.table, pool_min=2, pool_max=3)
    assert isinstance(s, SqlSiloStore)
    assert (s.pool.min_size, s.pool.max_size) == (2, 3)  # type: ignore[attr-defined]
    assert s.flushers == 1


@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_unreachable_server_is_one_line(dialect: str) -> None:
    base = server_url(dialect)
    url = base.replace("@127.0.0.1:", ":s3cret@127.0.0.1:").replace(":3306/", ":1/")
    url = url.replace(":5432/", ":1/")
    store = open_store(url)

    async def main() -> None:
        await store.open()

    with pytest.raises(StoreUnavailable) as info:
        run(main)
    text = str(info.value)
    assert "\n" not in text and "s3cret" not in text
    assert text.endswith(":***@127.0.0.1:1/test: Connection refused"), text


def test_extend_claims_renews_only_rows_the_owner_holds(backend: Backend) -> None:
    async def body(s: SiloStore) -> None:
        ids = [await s.store(msg(i)) for i in range(4)]
        run1 = await s.claim_batch("bob", "example.com", "A", 2000, 60, 3)
        assert [m.id for m in run1] == ids[:3]
        await s.release_many([ids[2]], "A")
        assert await s.extend_claims(ids, "A", 2500) == ids[:2]  # ids[2], ids[3]: not A's
        assert await s.extend_claims([], "A", 2500) == []
        rows = {m.id: m for m in await s.list_messages()}
        assert [rows[i].claim_until for i in ids] == [2500, 2500, 0, 0]
        # renewed: at 2100 (past the first lease) B still cannot take them over
        run2 = await s.claim_batch("bob", "example.com", "B", 2100, 60, 10)
        assert run2 == []
        assert await s.extend_claims(ids[:2], "B", 3000) == []

    with_store(backend, body)


def test_purge_expired_runs_in_chunks(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    import sipsilo.silo.ops
    import sipsilo.silo.store

    # the statements' LIMIT (one SQL for all backends) and the loop that runs them
    monkeypatch.setattr(sipsilo.silo.ops, "PURGE_CHUNK", 7)
    monkeypatch.setattr(sipsilo.silo.store, "PURGE_CHUNK", 7)

    async def body(s: SiloStore) -> None:
        await asyncio.gather(*(s.store(msg(i, exp=1500 + i % 2 * 5000)) for i in range(40)))
        name = "_write"  # one statement per call on every backend
        real = getattr(s, name)
        calls = []

        async def spy(*a: object, **kw: object) -> object:
            calls.append(a)
            return await real(*a, **kw)

        setattr(s, name, spy)
        assert await s.purge_expired(2000) == 20
        assert len(calls) == 3  # 7 + 7 + 6, each its own statement
        assert await s.count() == 20
        assert await s.purge_expired(2000) == 0

    with_store(backend, body)


def test_same_msg_key_is_stored_once_in_a_batch_and_across_instances(backend: Backend) -> None:
    """Idempotent store: repeats in one group-commit batch, later, and from a
    second instance racing the first all get the first row's id."""

    def keyed(i: int, key: str) -> NewMessage:
        m = msg(i)
        m.msg_key = key
        return m

    async def main() -> None:
        a, b = await backend.open(), await backend.open()
        try:
            ids = await asyncio.gather(*(a.store(keyed(i, f"k{i % 5}")) for i in range(20)))
            assert len(set(ids)) == 5 and ids[:5] == ids[5:10] == ids[15:]
            assert await a.store(keyed(99, "k0")) == ids[0]
            raced = await asyncio.gather(*(s.store(keyed(i, f"race{i // 2}"))
                                           for i in range(10) for s in (a, b)))
            assert len(set(raced)) == 5
            assert await a.count() == 10
            assert await b.stored_id("race0") == raced[0]
            assert await b.stored_id("never") is None
            assert a.stats.duplicates + b.stats.duplicates == 16 + 15
            # Rows without a key (Kamailio's, admin inserts) are never merged.
            await a.store(msg(1))
            await a.store(msg(1))
            assert await a.count() == 12
            assert await a.count_from("sip:alice@example.com") == 12
            assert await a.count_from("sip:nobody@example.com") == 0
        finally:
            await a.close()
            await b.close()

    run(main)


def test_a_new_message_costs_one_statement_besides_its_transaction(server: Backend) -> None:
    """The idempotency look-up rides on the INSERT: a message with a fresh
    msg_key is BEGIN, INSERT, COMMIT on a server database; a repeat costs the
    look-up only when the INSERT skipped it (docs/scaling.md)."""
    from sipsilo.db.base import STATEMENTS

    async def body(s: SiloStore) -> None:
        m = msg(1)
        m.msg_key = "fresh-1"
        before = STATEMENTS.n
        first = await s.store(m)
        assert STATEMENTS.n - before == 3
        before = STATEMENTS.n
        assert await s.store(m) == first
        # PostgreSQL skips the taken key and looks it up (4); MySQL's INSERT is
        # refused, then it looks the key up first (4 as well).
        assert STATEMENTS.n - before == 4
        assert await s.count() == 1

    with_store(server, body)


def test_a_resent_message_late_in_a_large_batch_leaves_the_rest_new(backend: Backend) -> None:
    """A batch spans several INSERT statements (100 rows each); a message stored
    before, far into it, is the only one answered as stored already: the rows of
    the statements before it are new (MySQL refuses that statement and looks up
    from there on), and rows without a key are stored once."""

    async def body(s: SiloStore) -> None:
        old = msg(0)
        old.msg_key = "sent-before"
        first = await s.store(old)
        batch = []
        for i in range(1, 161):
            m = msg(i)
            m.msg_key = None if i % 16 == 0 else f"new-{i}"
            batch.append(m)
        batch.insert(130, old)
        ids = await asyncio.gather(*(s.store(m) for m in batch))
        assert ids[130] == first and len(set(ids)) == 161
        assert s.stats.duplicates == 1
        assert await s.count() == 161

    with_store(backend, body)

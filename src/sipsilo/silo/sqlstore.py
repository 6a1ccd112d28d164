"""The message store on a database server (MySQL/MariaDB or PostgreSQL), shared by instances.

Group commit: ``store()`` queues the message; a few flusher tasks each take whatever is
queued (up to ``max_batch``) and insert it in ONE transaction, and every caller's future
resolves only after that COMMIT returned, so a 202 still means "durable".  Under load a
commit's round trip is paid once per batch instead of once per message.

Claims are compare-and-set, never long row locks::

    SELECT id, claim_owner, claim_until ... WHERE account AND deliverable ORDER BY id LIMIT n
    UPDATE ... SET claim_owner = me ... WHERE id = ? AND (claim_owner IS NULL OR claim_until < now)

The UPDATE re-checks "free" on the current row version (PostgreSQL re-evaluates the WHERE
after waiting for a row lock, InnoDB updates read the latest version), so of two
instances racing for a row exactly one gets rowcount 1; the loser scans again, now sees
the row held by someone else before its candidates, and gets None, which keeps the
per-account order across instances.  ``SELECT ... FOR UPDATE SKIP LOCKED`` was not used
because skipping a locked row is exactly how a later message would overtake it.
A crashed instance's claims lapse at ``claim_until`` and are retaken the same way.

Ordering caveat: ids come from AUTO_INCREMENT/SERIAL, allocated at INSERT but visible at
COMMIT, so two messages for one user stored in the same instant by two flushers may
become visible out of id order; delivery is still in id order among the visible rows.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .cluster import pending_elsewhere_sql
from .schema import LATEST_VERSION, MigrationError, check_identifier, current_version, migrate
from .sqlbase import Conn, Pool, Row, StoreUnavailable, run_txn
from .store import (
    PURGE_CHUNK,
    NewMessage,
    RowId,
    SiloStore,
    StoredMessage,
    StoreError,
    StoreStats,
    list_filter,
    purge_in_chunks,
)

COLS = (
    "id, src_addr, dst_addr, username, domain, inc_time, exp_time, snd_time, ctype,"
    " ctype_full, body, extra_hdrs, callid, status, attempts, claim_owner, claim_until"
)
_SCAN = 16  # rows per claim scan; more than a handful are held by the same owner only


def to_message(r: Row) -> StoredMessage:
    body = r[10]
    if body is None:
        body = b""
    elif isinstance(body, str):  # a row some other writer bound as text
        body = body.encode("utf-8", "surrogateescape")
    return StoredMessage(
        id=int(r[0]),
        src_addr=r[1],
        dst_addr=r[2],
        username=r[3],
        domain=r[4],
        inc_time=int(r[5]),
        exp_time=int(r[6]),
        snd_time=int(r[7]),
        ctype=r[9] if r[9] is not None else r[8],  # Kamailio's rows have no ctype_full
        body=bytes(body),
        extra_hdrs=r[11] or "",
        callid=r[12],
        status=int(r[13]),
        attempts=int(r[14]),
        claim_owner=r[15],
        claim_until=int(r[16]),
    )


@dataclass(slots=True)
class _Pending:
    msg: NewMessage
    fut: asyncio.Future[RowId]


class SqlSiloStore(SiloStore):
    """:class:`SiloStore` on a :class:`~sipsilo.silo.sqlbase.Pool`."""

    def __init__(
        self,
        pool: Pool,
        table: str = "silo",
        *,
        max_batch: int = 500,
        flushers: int | None = None,
        auto_migrate: bool = True,
    ) -> None:
        self.pool = pool
        self.table = check_identifier(table)
        self.max_batch = max(1, max_batch)
        # Concurrent batch transactions: enough to keep the server busy while one
        # commit waits for its fsync, leaving the rest of the pool for claims and reads.
        size = int(getattr(pool, "max_size", 2))
        self.flushers = flushers or max(1, size // 2)
        self.auto_migrate = auto_migrate
        self.stats = StoreStats()
        self._q: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._open = False
        t = self.table
        self._sql_insert_into = (
            f"INSERT INTO {t} (src_addr, dst_addr, username, domain, inc_time, exp_time,"
            " snd_time, ctype, ctype_full, body, extra_hdrs, callid, status, msg_key) VALUES "
        )
        self._sql_insert_row = "(%s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s, 0, %s)"
        self._sql_scan = (
            f"SELECT id, claim_owner, claim_until FROM {t} WHERE username = %s AND domain = %s"
            f" AND snd_time = 0 AND exp_time > %s AND id > %s ORDER BY id LIMIT {_SCAN}"
        )
        self._sql_claim = (
            f"UPDATE {t} SET claim_owner = %s, claim_until = %s, attempts = attempts + 1"
            " WHERE id = %s AND snd_time = 0 AND exp_time > %s"
            " AND (claim_owner IS NULL OR claim_until < %s)"
        )

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._open:
            return
        await self.pool.open()
        try:
            if self.auto_migrate:
                await migrate_pool(self.pool, self.table)
            else:
                v = await schema_version(self.pool, self.table)
                if v != LATEST_VERSION:
                    raise MigrationError(
                        f"table {self.table!r} is at schema version {v}, this sipsilo uses "
                        f"{LATEST_VERSION}; run 'sipsilo db migrate'"
                    )
        except BaseException:
            await self.pool.close()
            raise
        self._open = True
        self._tasks = [asyncio.create_task(self._flusher()) for _ in range(self.flushers)]

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        for _ in self._tasks:
            self._q.put_nowait(None)  # FIFO: every queued store is flushed first
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.pool.close()

    # ------------------------------------------------------------------ group commit

    async def _flusher(self) -> None:
        while True:
            first = await self._q.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch and not self._q.empty():
                nxt = self._q.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await self._flush(batch)
            if stop:
                return

    async def _flush(self, batch: list[_Pending], retry: bool = True) -> None:
        inserted: set[int] = set()  # positions in batch that got a new row

        async def insert_all(c: Conn) -> list[int]:
            nonlocal inserted
            # Messages stored before (a re-send, a retransmission after a restart)
            # and repeats inside this batch are answered with the first row's id.
            known = await self._known_keys(c, batch)
            fresh: list[int] = []  # positions in batch to insert
            for i, p in enumerate(batch):
                key = p.msg.msg_key
                if key is None or key not in known:
                    fresh.append(i)
                    if key is not None:
                        known[key] = -1  # a repeat later in the batch: not again
            ids: list[int] = []
            for chunk in _chunks([batch[i] for i in fresh]):
                ids += await c.insert_many(self._sql_insert_into, self._sql_insert_row,
                                           [p.msg.insert_values() for p in chunk])
            new_id = dict(zip(fresh, ids, strict=True))
            inserted = set(new_id)
            for i, rid in new_id.items():
                key = batch[i].msg.msg_key
                if key is not None:
                    known[key] = rid
            return [new_id[i] if i in new_id else known[p.msg.msg_key or ""]
                    for i, p in enumerate(batch)]

        try:
            ids = await run_txn(self.pool, insert_all)
        except StoreError as e:
            if isinstance(e, StoreUnavailable):
                self._fail(batch, e)
                return
            if len(batch) == 1:
                # Another instance committed the same msg_key between our look-up
                # and our INSERT (the unique key refused it): once more, the
                # look-up finds that row now.
                if retry:
                    await self._flush(batch, retry=False)
                else:
                    self._fail(batch, e)
                return
            # One message broke the shared transaction (rolled back): redo each alone
            # so only the culprit fails.
            for p in batch:
                await self._flush([p])
            return
        except Exception as e:  # a bug, but never leave a caller waiting
            self._fail(batch, StoreError(f"store failed: {e}"))
            return
        st = self.stats
        st.transactions += 1
        st.operations += len(batch)
        st.stores += len(batch)
        st.duplicates += len(batch) - len(inserted)
        st.max_batch = max(st.max_batch, len(batch))
        for i, (p, rid) in enumerate(zip(batch, ids, strict=True)):
            if not p.fut.done():
                p.fut.set_result(RowId(rid, duplicate=i not in inserted))

    def _fail(self, batch: list[_Pending], exc: StoreError) -> None:
        self.stats.errors += len(batch)
        for p in batch:
            if not p.fut.done():
                p.fut.set_exception(exc)

    async def _known_keys(self, c: Conn, batch: list[_Pending]) -> dict[str, int]:
        """msg_key -> id of the rows already stored for the batch's keys."""
        keys = list({p.msg.msg_key for p in batch if p.msg.msg_key is not None})
        if not keys:
            return {}
        marks = ", ".join(["%s"] * len(keys))
        rows = await c.fetch(
            f"SELECT msg_key, id FROM {self.table} WHERE msg_key IN ({marks})", keys)
        return {str(k): int(i) for k, i in rows}

    # ------------------------------------------------------------------ helpers

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("message store is not open")

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> int:
        self._check_open()
        return await run_txn(self.pool, lambda c: c.execute(sql, args), txn=False)

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        self._check_open()
        return await run_txn(self.pool, lambda c: c.fetch(sql, args), txn=False)

    # ------------------------------------------------------------------ API

    async def store(self, msg: NewMessage) -> RowId:
        self._check_open()
        fut: asyncio.Future[RowId] = asyncio.get_running_loop().create_future()
        self._q.put_nowait(_Pending(msg, fut))
        return await fut

    async def stored_id(self, msg_key: str) -> int | None:
        rows = await self._rows(f"SELECT id FROM {self.table} WHERE msg_key = %s", (msg_key,))
        return int(rows[0][0]) if rows else None

    async def count_from(self, src_addr: str) -> int:
        rows = await self._rows(
            f"SELECT COUNT(*) FROM {self.table} WHERE src_addr = %s", (src_addr,))
        return int(rows[0][0])

    async def pending_elsewhere(self, username: str, domain: str, owner: str, now: int
                                ) -> bool:
        rows = await self._rows(pending_elsewhere_sql(self.table),
                                (username, domain, int(now), owner, int(now)))
        return bool(rows)

    async def count_for(self, username: str, domain: str, now: int) -> int:
        rows = await self._rows(
            f"SELECT COUNT(*) FROM {self.table} WHERE username = %s AND domain = %s"
            " AND snd_time = 0 AND exp_time > %s",
            (username, domain, int(now)),
        )
        return int(rows[0][0])

    async def claim_next(
        self, username: str, domain: str, owner: str, now: int, claim_ttl: int
    ) -> StoredMessage | None:
        got = await self.claim_batch(username, domain, owner, now, claim_ttl, 1)
        return got[0] if got else None

    async def claim_batch(
        self, username: str, domain: str, owner: str, now: int, claim_ttl: int, limit: int
    ) -> builtins.list[StoredMessage]:
        """Claim a run of up to *limit* messages with one compare-and-set UPDATE.

        If another instance raced us for some of the rows, only the run's longest
        prefix that we hold is kept (the rest is released): the instance holding the
        lowest row goes on, the other one stops, as with single claims.
        """
        now, until = int(now), int(now) + int(claim_ttl)
        for _ in range(50):  # CAS lost: rescan (bounded, in case of a livelock)
            chosen = await self._candidates(username, domain, owner, now, max(1, limit))
            if not chosen:
                return []
            held = await self._cas(chosen, owner, now, until)
            run: builtins.list[StoredMessage] = []
            for rid in chosen:
                if rid not in held:
                    break
                run.append(held.pop(rid))
            if held:  # rows after a gap: give them back, order first
                await self.release_many(builtins.list(held), owner)
            if run:
                return run
        return []

    async def _candidates(
        self, username: str, domain: str, owner: str, now: int, limit: int
    ) -> builtins.list[int]:
        """The next free rows in id order, stopping at a row another owner holds."""
        chosen: builtins.list[int] = []
        after = 0
        while True:
            rows = await self._rows(self._sql_scan, (username, domain, now, after))
            for rid, holder, held_until in rows:
                if holder is None or int(held_until) < now:
                    chosen.append(int(rid))
                    if len(chosen) >= limit:
                        return chosen
                elif holder != owner:  # an earlier message is in flight elsewhere
                    return chosen
            if len(rows) < _SCAN:
                return chosen
            after = int(rows[-1][0])

    async def _cas(
        self, ids: builtins.list[int], owner: str, now: int, until: int
    ) -> dict[int, StoredMessage]:
        marks = ", ".join(["%s"] * len(ids))
        sql = self._sql_claim.replace("id = %s", f"id IN ({marks})")
        args = (owner, until, *ids, now, now)

        async def claim(c: Conn) -> builtins.list[Row]:
            if c.returning:
                return await c.fetch(f"{sql} RETURNING {COLS}", args)
            if not await c.execute(sql, args):
                return []
            return await c.fetch(
                f"SELECT {COLS} FROM {self.table} WHERE id IN ({marks})"
                " AND claim_owner = %s AND claim_until = %s",
                (*ids, owner, until),
            )

        self._check_open()
        # One UPDATE is the atomic step; MySQL's SELECT after it only reads back rows
        # we now hold.  Concurrent multi-row UPDATEs may deadlock: run_txn re-runs.
        rows = await run_txn(self.pool, claim, txn=False)
        return {int(r[0]): to_message(r) for r in rows}

    async def confirm_many(self, ids: builtins.list[int], owner: str | None = None) -> int:
        return await self._by_ids(f"DELETE FROM {self.table} WHERE", ids, owner)

    async def release_many(self, ids: builtins.list[int], owner: str | None = None) -> int:
        sql = f"UPDATE {self.table} SET claim_owner = NULL, claim_until = 0 WHERE"
        return await self._by_ids(sql, ids, owner)

    async def _by_ids(self, head: str, ids: builtins.list[int], owner: str | None) -> int:
        if not ids:
            return 0
        sql = f"{head} id IN ({', '.join(['%s'] * len(ids))})"
        if owner is None:
            return await self._one(sql, ids)
        return await self._one(sql + " AND claim_owner = %s", (*ids, owner))

    async def extend_claims(
        self, ids: builtins.list[int], owner: str, until: int
    ) -> builtins.list[int]:
        if not ids:
            return []
        marks = ", ".join(["%s"] * len(ids))
        await self._one(
            f"UPDATE {self.table} SET claim_until = %s WHERE id IN ({marks})"
            " AND claim_owner = %s",
            (int(until), *ids, owner),
        )
        rows = await self._rows(
            f"SELECT id FROM {self.table} WHERE id IN ({marks}) AND claim_owner = %s"
            " ORDER BY id",
            (*ids, owner),
        )
        return [int(r[0]) for r in rows]

    async def release_owner(self, owner: str) -> int:
        return await self._one(
            f"UPDATE {self.table} SET claim_owner = NULL, claim_until = 0"
            " WHERE claim_owner = %s",
            (owner,),
        )

    async def confirm(self, id: int, owner: str | None = None) -> bool:
        if owner is None:
            return await self.delete(id)
        return (
            await self._one(
                f"DELETE FROM {self.table} WHERE id = %s AND claim_owner = %s", (id, owner)
            )
            > 0
        )

    async def release(self, id: int, owner: str | None = None) -> bool:
        sql = f"UPDATE {self.table} SET claim_owner = NULL, claim_until = 0 WHERE id = %s"
        if owner is None:
            return await self._one(sql, (id,)) > 0
        return await self._one(sql + " AND claim_owner = %s", (id, owner)) > 0

    async def purge_expired(self, now: int) -> int:
        # Several instances may purge at once: each row is deleted by one of them, the
        # others' DELETE finds it gone; a deadlock between them is re-run by run_txn.
        # In chunks, each its own statement (autocommit), so a large purge never holds
        # the lock on many rows against stores and claims for long.
        if self.pool.dialect == "mysql":  # MySQL refuses LIMIT in an IN subquery
            sql = f"DELETE FROM {self.table} WHERE exp_time <= %s LIMIT {PURGE_CHUNK}"
        else:
            sql = (
                f"DELETE FROM {self.table} WHERE id IN"
                f" (SELECT id FROM {self.table} WHERE exp_time <= %s LIMIT {PURGE_CHUNK})"
            )
        return await purge_in_chunks(lambda: self._one(sql, (int(now),)))

    async def list(
        self,
        username: str | None = None,
        domain: str | None = None,
        limit: int = 1000,
        after_id: int = 0,
    ) -> builtins.list[StoredMessage]:
        where, args = list_filter(username, domain, after_id, "%s")
        sql = f"SELECT {COLS} FROM {self.table} WHERE {where} ORDER BY id LIMIT {int(limit)}"
        return [to_message(r) for r in await self._rows(sql, args)]

    async def get(self, id: int) -> StoredMessage | None:
        rows = await self._rows(f"SELECT {COLS} FROM {self.table} WHERE id = %s", (id,))
        return to_message(rows[0]) if rows else None

    async def delete(self, id: int) -> bool:
        return await self._one(f"DELETE FROM {self.table} WHERE id = %s", (id,)) > 0

    async def purge_account(self, username: str, domain: str) -> int:
        return await self._one(
            f"DELETE FROM {self.table} WHERE username = %s AND domain = %s", (username, domain)
        )

    async def purge_where(self, where: str, args: Sequence[Any] = ()) -> int:
        """Admin deletes (``silo purge``): *where* is our own SQL text, never user input."""
        return await self._one(f"DELETE FROM {self.table} WHERE {where}", args)

    async def count(self) -> int:
        return int((await self._rows(f"SELECT COUNT(*) FROM {self.table}"))[0][0])


# --------------------------------------------------------------------------- migrations


class _SyncCursor:
    """A DB-API-looking cursor for schema.migrate, run in a worker thread, whose every
    statement is executed on the event loop's async connection.  This keeps ONE
    migration runner (schema.migrate) for every backend."""

    def __init__(self, conn: Conn, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._loop = loop
        self._rows: builtins.list[Row] = []

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> None:
        head = sql.lstrip()[:6].upper()
        coro = (
            self._conn.fetch(sql, tuple(params))
            if head == "SELECT"
            else self._conn.execute(sql, tuple(params))
        )
        result = asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        self._rows = list(result) if isinstance(result, builtins.list) else []

    def fetchone(self) -> Row | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> builtins.list[Row]:
        rows, self._rows = self._rows, []
        return rows


class _SyncConn:
    def __init__(self, conn: Conn, loop: asyncio.AbstractEventLoop) -> None:
        self._cur = _SyncCursor(conn, loop)

    def cursor(self) -> _SyncCursor:
        return self._cur


async def migrate_pool(pool: Pool, table: str) -> tuple[int, int]:
    """Create/upgrade *table* on *pool*'s database; return (version before, after).

    A named server lock (GET_LOCK / pg_advisory_lock) serialises instances starting
    together: MySQL commits DDL implicitly, and two PostgreSQL ``CREATE TABLE IF NOT
    EXISTS`` at once can still collide on the catalog.
    """
    check_identifier(table)
    async with pool.acquire() as conn:
        name = f"sipsilo_migrate_{table}"
        await conn.lock(name)
        try:
            loop = asyncio.get_running_loop()
            return await asyncio.to_thread(migrate, _SyncConn(conn, loop), pool.dialect, table)
        finally:
            with contextlib.suppress(StoreError):
                await conn.unlock(name)


async def schema_version(pool: Pool, table: str) -> int:
    async with pool.acquire() as conn:
        loop = asyncio.get_running_loop()
        cur = _SyncCursor(conn, loop)
        return await asyncio.to_thread(current_version, cur, pool.dialect, table)


# One multi-row INSERT carries at most this many rows or bytes of bodies: well
# inside MySQL's max_allowed_packet (16 MiB by default) and PostgreSQL's 65535
# parameters, large enough that a busy second needs few round trips.
_CHUNK_ROWS = 100
_CHUNK_BYTES = 1 << 20


def _chunks(batch: list[_Pending]) -> list[list[_Pending]]:
    out: list[list[_Pending]] = []
    size = 0
    for p in batch:
        body = len(p.msg.body)
        if not out or len(out[-1]) >= _CHUNK_ROWS or size + body > _CHUNK_BYTES:
            out.append([])
            size = 0
        out[-1].append(p)
        size += body
    return out

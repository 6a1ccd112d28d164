"""The message store over SQL: the API once, and its server backend.

:class:`SqlMessageStore` maps every :class:`~sipsilo.silo.store.SiloStore` operation onto
:class:`~sipsilo.silo.ops.MessageOps`; a backend says only how a connection is had
(``_read``/``_write``) and how ``store()`` commits.  :class:`SqlSiloStore` is the backend
on a MySQL/MariaDB or PostgreSQL pool, shared by instances; SQLite's is
:class:`~sipsilo.silo.sqlite.SqliteSiloStore`.

Group commit on a server: ``store()`` queues the message; a few flusher tasks each take
whatever is queued (up to ``max_batch``) and insert it in ONE transaction, and every
caller's future resolves only after that COMMIT returned, so a 202 still means
"durable".  Under load a commit's round trip is paid once per batch instead of once per
message.

Ordering caveat: ids come from AUTO_INCREMENT/SERIAL, allocated at INSERT but visible at
COMMIT, so two messages for one user stored in the same instant by two flushers may
become visible out of id order; delivery is still in id order among the visible rows.
"""

from __future__ import annotations

import asyncio
import builtins
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sipsilo.db.base import Conn, Pool, Row, run_txn
from sipsilo.db.errors import MigrationError, StoreError, StoreUnavailable
from sipsilo.db.migrate import migrate_pool, schema_version
from sipsilo.db.schema import LATEST_VERSION

from .cluster import pending_elsewhere_sql
from .ops import MessageOps
from .store import NewMessage, RowId, SiloStore, StoredMessage, StoreStats, purge_in_chunks

T = TypeVar("T")
Op = Callable[[Conn], Awaitable[T]]


class SqlMessageStore(SiloStore):
    """Every store operation but ``store()``, once, over :class:`MessageOps`."""

    ops: MessageOps

    @abstractmethod
    async def _read(self, fn: Op[T]) -> T:
        """Run *fn* on a connection, for reading."""

    @abstractmethod
    async def _write(self, fn: Op[T]) -> T:
        """Run *fn* on a connection and commit."""

    async def stored_id(self, msg_key: str) -> int | None:
        return await self._read(lambda c: self.ops.stored_id(c, msg_key))

    async def count_for(self, username: str, domain: str, now: int) -> int:
        return await self._read(lambda c: self.ops.count_for(c, username, domain, now))

    async def count_from(self, src_addr: str) -> int:
        return await self._read(lambda c: self.ops.count_from(c, src_addr))

    async def pending_elsewhere(self, username: str, domain: str, owner: str, now: int
                                ) -> bool:
        sql = self.ops.dialect.sql(pending_elsewhere_sql(self.ops.table))
        args = (username, domain, int(now), owner, int(now))
        return bool(await self._read(lambda c: c.fetch(sql, args)))

    async def claim_next(
        self, username: str, domain: str, owner: str, now: int, claim_ttl: int
    ) -> StoredMessage | None:
        got = await self.claim_batch(username, domain, owner, now, claim_ttl, 1)
        return got[0] if got else None

    async def claim_batch(
        self, username: str, domain: str, owner: str, now: int, claim_ttl: int, limit: int
    ) -> builtins.list[StoredMessage]:
        return await self._write(
            lambda c: self.ops.claim_batch(c, username, domain, owner, now, claim_ttl, limit))

    async def confirm_many(self, ids: builtins.list[int], owner: str | None = None) -> int:
        ids = builtins.list(ids)
        return await self._write(lambda c: self.ops.by_ids(c, self.ops.sql_delete, ids, owner))

    async def release_many(self, ids: builtins.list[int], owner: str | None = None, *,
                           untried: bool = False) -> int:
        ids = builtins.list(ids)
        head = self.ops.sql_release_untried if untried else self.ops.sql_release
        return await self._write(lambda c: self.ops.by_ids(c, head, ids, owner))

    async def extend_claims(
        self, ids: builtins.list[int], owner: str, until: int
    ) -> builtins.list[int]:
        ids = builtins.list(ids)
        return await self._write(lambda c: self.ops.extend_claims(c, ids, owner, until))

    async def claimed_for(self, owner: str) -> builtins.list[tuple[str, str]]:
        return await self._read(lambda c: self.ops.claimed_for(c, owner))

    async def release_owner(self, owner: str) -> int:
        return await self._write(lambda c: self.ops.release_owner(c, owner))

    async def confirm(self, id: int, owner: str | None = None) -> bool:
        return await self.confirm_many([id], owner) > 0

    async def release(self, id: int, owner: str | None = None) -> bool:
        return await self.release_many([id], owner) > 0

    async def purge_expired(self, now: int) -> int:
        # Each chunk its own statement: stores and claims get the lock in between.
        # Several instances may purge at once: each row is deleted by one of them, the
        # others' DELETE finds it gone; a deadlock between them is re-run by run_txn.
        args = (int(now),)
        return await purge_in_chunks(
            lambda: self._write(lambda c: c.execute(self.ops.sql_purge_expired, args)))

    async def list_messages(self, username: str | None = None, domain: str | None = None,
                            limit: int = 1000, after_id: int = 0
                            ) -> builtins.list[StoredMessage]:
        return await self._read(
            lambda c: self.ops.list_messages(c, username, domain, limit, after_id))

    async def get(self, id: int) -> StoredMessage | None:
        return await self._read(lambda c: self.ops.get(c, id))

    async def delete(self, id: int) -> bool:
        return await self.confirm_many([id]) > 0

    async def purge_account(self, username: str, domain: str) -> int:
        return await self.purge_where("username = %s AND domain = %s", (username, domain))

    async def purge_where(self, where: str, args: Sequence[Any] = ()) -> int:
        """Admin deletes (``silo purge``): *where* is our own SQL text, never user input."""
        return await self._write(lambda c: self.ops.delete_where(c, where, args))

    async def count(self) -> int:
        return await self._read(self.ops.count)

    async def waiting(self) -> builtins.list[Row]:
        """(username, domain, rows, oldest inc_time) per account that has rows."""
        return await self._read(self.ops.waiting)

    async def summary(self) -> tuple[int, int | None]:
        """(rows, inc_time of the first row by id, None when empty)."""
        return await self._read(self.ops.summary)


@dataclass(slots=True)
class _Pending:
    msg: NewMessage
    fut: asyncio.Future[RowId]


class SqlSiloStore(SqlMessageStore):
    """:class:`SiloStore` on a :class:`~sipsilo.db.base.Pool` (MySQL/MariaDB, PostgreSQL)."""

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
        self.ops = MessageOps(table, pool.dialect)
        self.table = self.ops.table
        self.max_batch = max(1, max_batch)
        # Concurrent batch transactions: enough to keep the server busy while one
        # commit waits for its fsync, leaving the rest of the pool for claims and reads.
        size = int(getattr(pool, "max_size", 2))
        self.flushers = flushers or max(1, size // 2)
        self.auto_migrate = auto_migrate
        self.stats = StoreStats()
        self._q: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._tasks: builtins.list[asyncio.Task[None]] = []
        self._open = False

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

    # ------------------------------------------------------------------ connections

    async def _read(self, fn: Op[T]) -> T:
        if not self._open:
            raise StoreError("message store is not open")
        return await run_txn(self.pool, fn, txn=False)

    # Each statement commits by itself (autocommit): a claim's UPDATE is its atomic
    # step, and concurrent multi-row UPDATEs that deadlock are re-run by run_txn.
    _write = _read

    # ------------------------------------------------------------------ group commit

    async def store(self, msg: NewMessage) -> RowId:
        if not self._open:
            raise StoreError("message store is not open")
        fut: asyncio.Future[RowId] = asyncio.get_running_loop().create_future()
        self._q.put_nowait(_Pending(msg, fut))
        return await fut

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

    async def _flush(self, batch: builtins.list[_Pending], retry: bool = True) -> None:
        msgs = [p.msg for p in batch]
        try:
            results = await run_txn(self.pool, lambda c: self.ops.insert(c, msgs))
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
        st.duplicates += sum(1 for _, new in results if not new)
        st.max_batch = max(st.max_batch, len(batch))
        for p, (rid, new) in zip(batch, results, strict=True):
            if not p.fut.done():
                p.fut.set_result(RowId(rid, duplicate=not new))

    def _fail(self, batch: builtins.list[_Pending], exc: StoreError) -> None:
        self.stats.errors += len(batch)
        for p in batch:
            if not p.fut.done():
                p.fut.set_exception(exc)


__all__ = ["SqlMessageStore", "SqlSiloStore"]

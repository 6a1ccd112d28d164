"""SQLite backend of the message store, with group commit.

One dedicated thread owns one stdlib ``sqlite3`` connection and executes every operation.
Coroutines queue jobs; the thread drains whatever is queued (up to ``max_batch``) and runs
it in ONE write transaction, commits, and only then resolves the callers' futures.  While a
commit's fsync runs, new jobs pile up and form the next batch, so throughput grows with
concurrency while each caller still returns only after its own row is durable.  SQLite
serialises writers anyway, so one thread loses nothing; a thread beats aiosqlite here
because aiosqlite commits per call and pays a thread hop per statement (see tests).

Durability: WAL with ``synchronous=FULL`` by default.  Every commit fsyncs the WAL, so a
returned ``store()`` survives process death (SIGKILL) AND power loss / OS crash.  With
``synchronous="NORMAL"`` in WAL mode a commit is written to the WAL (OS page cache) but not
fsynced: it survives SIGKILL, and the database is never corrupted, but the last commits can
be lost on power loss.  FULL costs one fsync per *batch*, not per message, so it stays.

Other processes (the CLI, a second server on the same file) are handled by SQLite's locks:
WAL lets readers run beside the writer, ``busy_timeout`` makes a writer wait for the lock
instead of failing with "database is locked", and ``BEGIN IMMEDIATE`` takes the write lock
up front so a read-then-write (claim) can never hit a lock upgrade deadlock.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .schema import LATEST_VERSION, MigrationError, check_identifier, current_version, migrate
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

log = logging.getLogger(__name__)

_COLS = (
    "id, src_addr, dst_addr, username, domain, inc_time, exp_time, snd_time, ctype,"
    " ctype_full, body, extra_hdrs, callid, status, attempts, claim_owner, claim_until"
)


def connect(
    path: str | Path, *, busy_timeout: float = 10.0, synchronous: str = "FULL"
) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN/COMMIT ourselves), WAL journal."""
    if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
    conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal" and str(path) != ":memory:":
            raise StoreError(f"cannot put {path} into WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def write_txn(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _row(r: tuple[Any, ...]) -> StoredMessage:
    body = r[10]
    if body is None:
        body = b""
    elif isinstance(body, str):  # a row some other writer bound as TEXT
        body = body.encode("utf-8", "surrogateescape")
    return StoredMessage(
        id=r[0],
        src_addr=r[1],
        dst_addr=r[2],
        username=r[3],
        domain=r[4],
        inc_time=r[5],
        exp_time=r[6],
        snd_time=r[7],
        # Rows inserted by Kamailio have no ctype_full: fall back to its type/subtype.
        ctype=r[9] if r[9] is not None else r[8],
        body=bytes(body),
        extra_hdrs=r[11] or "",
        callid=r[12],
        status=r[13],
        attempts=r[14],
        claim_owner=r[15],
        claim_until=r[16],
    )


class SqliteOps:
    """The SQL, synchronous, on a given connection; the caller owns the transaction.

    Every statement of the delivery path is keyed by the primary key, the
    (username, domain) index or the exp_time index: tests check the query plans.
    """

    def __init__(self, conn: sqlite3.Connection, table: str) -> None:
        self.conn = conn
        t = self.table = check_identifier(table)
        self.sql_insert = (
            f"INSERT INTO {t} (src_addr, dst_addr, username, domain, inc_time, exp_time,"
            " snd_time, ctype, ctype_full, body, extra_hdrs, callid, status, msg_key)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, 0, ?)"
        )
        self.sql_by_key = f"SELECT id FROM {t} WHERE msg_key = ?"
        self.sql_count_from = f"SELECT COUNT(*) FROM {t} WHERE src_addr = ?"
        self.sql_count_for = (
            f"SELECT COUNT(*) FROM {t}"
            " WHERE username = ? AND domain = ? AND snd_time = 0 AND exp_time > ?"
        )
        # The (username, domain) index stores rowids in order, so ORDER BY id needs no sort.
        self.sql_claim_scan = (
            f"SELECT id, claim_owner, claim_until FROM {t}"
            " WHERE username = ? AND domain = ? AND snd_time = 0 AND exp_time > ? ORDER BY id"
        )
        self.sql_claim = (
            f"UPDATE {t} SET claim_owner = ?, claim_until = ?, attempts = attempts + 1 WHERE id = ?"
        )
        self.sql_get = f"SELECT {_COLS} FROM {t} WHERE id = ?"
        # In chunks: each runs as its own short job of the writer thread.
        self.sql_purge_expired = (
            f"DELETE FROM {t} WHERE id IN"
            f" (SELECT id FROM {t} WHERE exp_time <= ? LIMIT {PURGE_CHUNK})"
        )

    def insert(self, m: NewMessage) -> tuple[int, bool]:
        """(row id, inserted): an existing row of the same msg_key is not
        inserted again.  The writer thread is the only writer of this process
        and runs this inside its transaction, so the look-up and the INSERT
        are one step (the unique index guards other processes)."""
        if m.msg_key is not None:
            old = self.stored_id(m.msg_key)
            if old is not None:
                return old, False
        cur = self.conn.execute(self.sql_insert, m.insert_values())
        rid = cur.lastrowid
        assert rid is not None
        return rid, True

    def stored_id(self, msg_key: str) -> int | None:
        row = self.conn.execute(self.sql_by_key, (msg_key,)).fetchone()
        return int(row[0]) if row else None

    def count_for(self, username: str, domain: str, now: int) -> int:
        return int(self.conn.execute(self.sql_count_for, (username, domain, now)).fetchone()[0])

    def count_from(self, src_addr: str) -> int:
        return int(self.conn.execute(self.sql_count_from, (src_addr,)).fetchone()[0])

    def claim_next(
        self, username: str, domain: str, owner: str, now: int, claim_ttl: int
    ) -> StoredMessage | None:
        """Must run inside a write transaction (BEGIN IMMEDIATE) to be atomic."""
        chosen: int | None = None
        for rid, holder, until in self.conn.execute(self.sql_claim_scan, (username, domain, now)):
            if holder is None or until < now:  # free, or a lapsed claim of a dead holder
                chosen = rid
                break
            if holder != owner:  # an earlier message is in flight elsewhere: keep order
                return None
        if chosen is None:
            return None
        self.conn.execute(self.sql_claim, (owner, now + claim_ttl, chosen))
        return self.get(chosen)

    def claim_batch(
        self, username: str, domain: str, owner: str, now: int, claim_ttl: int, limit: int
    ) -> builtins.list[StoredMessage]:
        """claim_next for a run of rows; inside a write transaction."""
        chosen: builtins.list[int] = []
        for rid, holder, until in self.conn.execute(self.sql_claim_scan, (username, domain, now)):
            if holder is None or until < now:
                chosen.append(rid)
                if len(chosen) >= limit:
                    break
            elif holder != owner:
                break  # an earlier message is in flight elsewhere: keep order
        if not chosen:
            return []
        marks = ",".join("?" * len(chosen))
        self.conn.execute(
            f"UPDATE {self.table} SET claim_owner = ?, claim_until = ?, attempts = attempts + 1"
            f" WHERE id IN ({marks})",
            (owner, now + claim_ttl, *chosen),
        )
        rows = self.conn.execute(
            f"SELECT {_COLS} FROM {self.table} WHERE id IN ({marks}) ORDER BY id", chosen
        )
        return [_row(r) for r in rows]

    def confirm_many(self, ids: builtins.list[int], owner: str | None) -> int:
        return self._by_ids(f"DELETE FROM {self.table}", ids, owner)

    def release_many(self, ids: builtins.list[int], owner: str | None) -> int:
        return self._by_ids(
            f"UPDATE {self.table} SET claim_owner = NULL, claim_until = 0", ids, owner
        )

    def _by_ids(self, head: str, ids: builtins.list[int], owner: str | None) -> int:
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        sql = f"{head} WHERE id IN ({marks})"
        args: builtins.list[Any] = list(ids)
        if owner is not None:
            sql += " AND claim_owner = ?"
            args.append(owner)
        return self.conn.execute(sql, args).rowcount

    def extend_claims(
        self, ids: builtins.list[int], owner: str, until: int
    ) -> builtins.list[int]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        self.conn.execute(
            f"UPDATE {self.table} SET claim_until = ? WHERE id IN ({marks}) AND claim_owner = ?",
            (until, *ids, owner),
        )
        rows = self.conn.execute(
            f"SELECT id FROM {self.table} WHERE id IN ({marks}) AND claim_owner = ?"
            " ORDER BY id",
            (*ids, owner),
        )
        return [int(r[0]) for r in rows]

    def release_owner(self, owner: str) -> int:
        return self.conn.execute(
            f"UPDATE {self.table} SET claim_owner = NULL, claim_until = 0 WHERE claim_owner = ?",
            (owner,),
        ).rowcount

    def confirm(self, id: int, owner: str | None = None) -> bool:
        if owner is None:
            cur = self.conn.execute(f"DELETE FROM {self.table} WHERE id = ?", (id,))
        else:
            cur = self.conn.execute(
                f"DELETE FROM {self.table} WHERE id = ? AND claim_owner = ?", (id, owner)
            )
        return cur.rowcount > 0

    def release(self, id: int, owner: str | None = None) -> bool:
        sql = f"UPDATE {self.table} SET claim_owner = NULL, claim_until = 0 WHERE id = ?"
        if owner is None:
            cur = self.conn.execute(sql, (id,))
        else:
            cur = self.conn.execute(sql + " AND claim_owner = ?", (id, owner))
        return cur.rowcount > 0

    def purge_expired(self, now: int) -> int:
        return self.conn.execute(self.sql_purge_expired, (now,)).rowcount

    def list(
        self,
        username: str | None = None,
        domain: str | None = None,
        limit: int = 1000,
        after_id: int = 0,
    ) -> builtins.list[StoredMessage]:
        where, args = list_filter(username, domain, after_id, "?")
        args.append(limit)
        sql = f"SELECT {_COLS} FROM {self.table} WHERE {where} ORDER BY id LIMIT ?"
        return [_row(r) for r in self.conn.execute(sql, args)]

    def get(self, id: int) -> StoredMessage | None:
        r = self.conn.execute(self.sql_get, (id,)).fetchone()
        return _row(r) if r else None

    def delete(self, id: int) -> bool:
        return self.confirm(id)

    def purge_account(self, username: str, domain: str) -> int:
        return self.conn.execute(
            f"DELETE FROM {self.table} WHERE username = ? AND domain = ?", (username, domain)
        ).rowcount

    def count(self) -> int:
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])


@dataclass(slots=True)
class _Job:
    fn: Callable[[SqliteOps], Any]
    fut: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    readonly: bool
    is_store: bool = False


_STOP = object()
_Result = tuple[bool, Any]  # (ok, value or exception)
_Settle = tuple["asyncio.Future[Any]", bool, Any]


class _TxnFailed(Exception):
    """BEGIN/COMMIT itself failed: the whole batch failed."""

    def __init__(self, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.error = error


class SqliteSiloStore(SiloStore):
    """:class:`SiloStore` on one SQLite file.

    *auto_migrate*: create/upgrade the schema on open (else a database that is not at the
    latest version is refused).  *max_batch* bounds one transaction's size so a huge burst
    does not hold the write lock for long against other processes.
    """

    def __init__(
        self,
        path: str | Path,
        table: str = "silo",
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 10.0,
        max_batch: int = 1000,
        auto_migrate: bool = True,
    ) -> None:
        self.path = str(path)
        self.table = check_identifier(table)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.max_batch = max(1, max_batch)
        self.auto_migrate = auto_migrate
        self.stats = StoreStats()
        self._q: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._writer_lock: int | None = None  # fd of <db>-writer, see _txn

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._thread is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"silo-writer:{self.path}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            self._thread = None
            raise

    async def close(self) -> None:
        thread = self._thread
        if thread is None or self._closed:
            return
        self._closed = True
        self._q.put(_STOP)  # FIFO: everything queued before is still executed
        await asyncio.to_thread(thread.join)
        self._thread = None

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            conn = connect(self.path, busy_timeout=self.busy_timeout, synchronous=self.synchronous)
        except BaseException as e:
            ready.set_exception(StoreError(f"cannot open {self.path}: {e}"))
            return
        try:
            try:
                if self.auto_migrate:
                    migrate(conn, "sqlite", self.table)
                else:
                    v = current_version(conn.cursor(), "sqlite", self.table)
                    if v != LATEST_VERSION:
                        raise MigrationError(
                            f"{self.path}: schema version {v}, need {LATEST_VERSION}; "
                            "run 'sipsilo db migrate'"
                        )
            except BaseException as e:
                ready.set_exception(e if isinstance(e, Exception) else StoreError(str(e)))
                return
            if self.path != ":memory:":
                try:
                    self._writer_lock = os.open(
                        self.path + "-writer", os.O_RDWR | os.O_CREAT, 0o600)
                except OSError as e:  # a read-only directory: SQLite's own locking still works
                    log.warning("no writer lock file for %s (%s): writers of several"
                                " processes will wait in SQLite's busy handler", self.path, e)
                # Checkpoints copy the WAL into the database file and fsync it:
                # done inside a writer's COMMIT they stall every store queued
                # behind it for a few hundred milliseconds. The writer never
                # checkpoints; a thread of its own does, without blocking it.
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                conn.execute("PRAGMA journal_size_limit = 67108864")
                self._stop_checkpoints.clear()
                self._checkpointer = threading.Thread(
                    target=self._checkpoints, name=f"silo-checkpoint:{self.path}", daemon=True
                )
                self._checkpointer.start()
            ready.set_result(None)
            self._serve(SqliteOps(conn, self.table))
        finally:
            self._stop_checkpoints.set()
            if self._checkpointer is not None:
                self._checkpointer.join()
                self._checkpointer = None
            with contextlib.suppress(sqlite3.Error):
                # Leave a tidy file behind: everything in the database, WAL emptied.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
            if self._writer_lock is not None:
                os.close(self._writer_lock)
                self._writer_lock = None

    def _checkpoints(self, interval: float = 2.0) -> None:
        """Copy committed WAL frames into the database while the writer goes on."""
        try:
            conn = connect(self.path, busy_timeout=self.busy_timeout, synchronous=self.synchronous)
        except BaseException as e:  # the writer still works; the WAL just grows
            log.warning("no checkpoint thread for %s: %s", self.path, e)
            return
        try:
            while not self._stop_checkpoints.wait(interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as e:
                    log.debug("checkpoint of %s: %s", self.path, e)
        finally:
            conn.close()

    def _serve(self, ops: SqliteOps) -> None:
        while True:
            first = self._q.get()
            if first is _STOP:
                return
            assert isinstance(first, _Job)
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                assert isinstance(nxt, _Job)
                batch.append(nxt)
            self._execute(ops, batch)
            if stop:
                return

    # ------------------------------------------------------------------ batching

    def _execute(self, ops: SqliteOps, batch: builtins.list[_Job]) -> None:
        try:
            results = self._txn(ops, batch)
        except _TxnFailed as e:
            # BEGIN or COMMIT failed (lock wait timed out, I/O error): nothing of the batch
            # is committed; retrying job by job would only multiply the wait.
            results = [(False, _wrap(e.error))] * len(batch)
        except Exception as e:
            if len(batch) == 1:
                results = [(False, _wrap(e))]
            else:
                # One job broke the shared transaction (rolled back): redo each alone so
                # only the culprit fails.  Jobs are plain DB operations, safe to re-run.
                results = []
                for job in batch:
                    try:
                        results.extend(self._txn(ops, [job]))
                    except _TxnFailed as e1:
                        results.append((False, _wrap(e1.error)))
                    except Exception as e1:
                        results.append((False, _wrap(e1)))
        self._resolve(batch, results)

    def _txn(self, ops: SqliteOps, batch: builtins.list[_Job]) -> builtins.list[_Result]:
        if all(j.readonly for j in batch):
            return [(True, j.fn(ops)) for j in batch]
        conn = ops.conn
        lock = self._writer_lock
        if lock is not None:
            self._take_writer_lock(lock)
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise _TxnFailed(e) from e
            try:
                out = [(True, j.fn(ops)) for j in batch]
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise _TxnFailed(e) from e
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
        st = self.stats
        st.transactions += 1
        st.operations += len(batch)
        st.stores += sum(1 for j in batch if j.is_store)
        st.max_batch = max(st.max_batch, len(batch))
        return out

    def _take_writer_lock(self, lock: int) -> None:
        """Several sipsilo processes on this file (worker processes) take turns here.

        SQLite's own busy handler sleeps 1, 2, 5, 10, 15 ms... between tries:
        a writer waiting behind another's 1 ms commit would lose several. This
        polls with short sleeps instead, bounded like SQLite's wait by
        busy_timeout (a process stuck holding it must not hang the others:
        their stores fail with 503 and the senders retry).
        """
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.0001
        while True:
            time.sleep(pause)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _TxnFailed(sqlite3.OperationalError(
                        "database is locked (another sipsilo process holds the writer lock)"
                    )) from None
                pause = min(pause * 2, 0.001)

    def _resolve(self, batch: builtins.list[_Job], results: builtins.list[_Result]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, builtins.list[_Settle]] = {}
        for job, (ok, val) in zip(batch, results, strict=True):
            if not ok:
                self.stats.errors += 1
            by_loop.setdefault(job.loop, []).append((job.fut, ok, val))
        for loop, items in by_loop.items():
            # RuntimeError: the caller's loop is closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)

    async def _submit(
        self, fn: Callable[[SqliteOps], Any], readonly: bool = False, is_store: bool = False
    ) -> Any:
        if self._thread is None or self._closed:
            raise StoreError("message store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._q.put(_Job(fn, fut, loop, readonly, is_store))
        return await fut

    # ------------------------------------------------------------------ API

    async def store(self, msg: NewMessage) -> RowId:
        rid, inserted = await self._submit(lambda o: o.insert(msg), is_store=True)
        if not inserted:
            self.stats.duplicates += 1
        return RowId(rid, duplicate=not inserted)

    async def stored_id(self, msg_key: str) -> int | None:
        res: int | None = await self._submit(lambda o: o.stored_id(msg_key), True)
        return res

    async def count_for(self, username: str, domain: str, now: int) -> int:
        return int(await self._submit(lambda o: o.count_for(username, domain, int(now)), True))

    async def count_from(self, src_addr: str) -> int:
        return int(await self._submit(lambda o: o.count_from(src_addr), True))

    async def claim_next(
        self, username: str, domain: str, owner: str, now: int, claim_ttl: int
    ) -> StoredMessage | None:
        res: StoredMessage | None = await self._submit(
            lambda o: o.claim_next(username, domain, owner, int(now), int(claim_ttl))
        )
        return res

    async def claim_batch(
        self, username: str, domain: str, owner: str, now: int, claim_ttl: int, limit: int
    ) -> builtins.list[StoredMessage]:
        res: builtins.list[StoredMessage] = await self._submit(
            lambda o: o.claim_batch(username, domain, owner, int(now), int(claim_ttl), limit)
        )
        return res

    async def confirm_many(self, ids: builtins.list[int], owner: str | None = None) -> int:
        return int(await self._submit(lambda o: o.confirm_many(list(ids), owner)))

    async def release_many(self, ids: builtins.list[int], owner: str | None = None) -> int:
        return int(await self._submit(lambda o: o.release_many(list(ids), owner)))

    async def extend_claims(
        self, ids: builtins.list[int], owner: str, until: int
    ) -> builtins.list[int]:
        res: builtins.list[int] = await self._submit(
            lambda o: o.extend_claims(list(ids), owner, int(until))
        )
        return res

    async def release_owner(self, owner: str) -> int:
        return int(await self._submit(lambda o: o.release_owner(owner)))

    async def confirm(self, id: int, owner: str | None = None) -> bool:
        return bool(await self._submit(lambda o: o.confirm(id, owner)))

    async def release(self, id: int, owner: str | None = None) -> bool:
        return bool(await self._submit(lambda o: o.release(id, owner)))

    async def purge_expired(self, now: int) -> int:
        # One chunk per writer job: stores queued meanwhile go in between chunks.
        async def chunk() -> int:
            return int(await self._submit(lambda o: o.purge_expired(int(now))))

        return await purge_in_chunks(chunk)

    async def list(
        self,
        username: str | None = None,
        domain: str | None = None,
        limit: int = 1000,
        after_id: int = 0,
    ) -> builtins.list[StoredMessage]:
        res: builtins.list[StoredMessage] = await self._submit(
            lambda o: o.list(username, domain, limit, after_id), True
        )
        return res

    async def get(self, id: int) -> StoredMessage | None:
        res: StoredMessage | None = await self._submit(lambda o: o.get(id), True)
        return res

    async def delete(self, id: int) -> bool:
        return bool(await self._submit(lambda o: o.delete(id)))

    async def purge_account(self, username: str, domain: str) -> int:
        return int(await self._submit(lambda o: o.purge_account(username, domain)))

    async def count(self) -> int:
        return int(await self._submit(lambda o: o.count(), True))


def _wrap(e: Exception) -> Exception:
    if isinstance(e, sqlite3.Error):
        err = StoreError(f"sqlite: {e}")
        err.__cause__ = e
        return err
    return e


def _settle(items: builtins.list[_Settle]) -> None:
    for fut, ok, val in items:
        if fut.done():  # cancelled by its caller
            continue
        if ok:
            fut.set_result(val)
        else:
            fut.set_exception(val)

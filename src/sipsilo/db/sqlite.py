"""SQLite: connections, the pool for occasional users, and the writer thread.

Two ways to use a SQLite file, for two kinds of users:

* :class:`SqlitePool`: one connection used from worker threads under a lock, behind the
  same :class:`~sipsilo.db.base.Pool` interface as the server databases.  For the
  subscriber table and the location service, whose writes are rare.
* :class:`SqliteWriter`: the message store's group commit.  One dedicated thread owns one
  connection and executes every job.  Coroutines queue jobs; the thread drains whatever
  is queued (up to ``max_batch``), runs it in ONE write transaction, commits, and only
  then resolves the callers' futures.  While a commit's fsync runs, new jobs pile up and
  form the next batch, so throughput grows with concurrency while each caller still
  returns only after its own row is durable.  SQLite serialises writers anyway, so one
  thread loses nothing; it beats a thread hop per statement with a commit per call.

A job is written against a :class:`~sipsilo.db.base.Conn` like any other store code
(:class:`ThreadConn`): its ``async`` methods run the statement at once, so the writer
drives a job's coroutine to its end without an event loop (:func:`run_now`).  The SQL
of a store is thereby written once for SQLite and the server databases.

Durability: WAL with ``synchronous=FULL`` by default.  Every commit fsyncs the WAL, so a
returned job survives process death (SIGKILL) AND power loss / OS crash.  With
``synchronous="NORMAL"`` in WAL mode a commit is written to the WAL (OS page cache) but not
fsynced: it survives SIGKILL, and the database is never corrupted, but the last commits can
be lost on power loss.  FULL costs one fsync per *batch*, not per job, so it stays.

Other processes (the CLI, a second server on the same file) are handled by SQLite's locks:
WAL lets readers run beside the writer, ``busy_timeout`` makes a writer wait for the lock
instead of failing with "database is locked", and ``BEGIN IMMEDIATE`` takes the write lock
up front so a read-then-write (claim) can never hit a lock upgrade deadlock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import CoroutineType
from typing import Any, Protocol, TypeVar

from .base import Conn, Pool, Row
from .errors import StoreError, StoreUnavailable
from .url import DbUrl, SqlDialect

log = logging.getLogger(__name__)
T = TypeVar("T")
#: ``UPDATE ... RETURNING`` (SQLite >= 3.35).
RETURNING = sqlite3.sqlite_version_info >= (3, 35)


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


def _new_id(cur: sqlite3.Cursor) -> int | None:
    """The id an INSERT ... DO NOTHING made, or None when it skipped the row
    (``lastrowid`` then still names an earlier insert: the count decides)."""
    return int(cur.lastrowid or 0) if cur.rowcount > 0 else None


# --------------------------------------------------------------------------- pool


class _SqliteConn(Conn):
    dialect: SqlDialect = "sqlite"
    returning = RETURNING

    def __init__(self, pool: SqlitePool) -> None:
        self._pool = pool

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._pool.lock:
                assert self._pool.conn is not None
                return fn(self._pool.conn)

        try:
            return await asyncio.to_thread(locked)
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"sqlite: {e}") from e
        except sqlite3.Error as e:
            raise StoreError(f"sqlite: {e}") from e

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        q = sql.replace("%s", "?")
        return await self._call(lambda c: c.execute(q, tuple(args)).rowcount)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        q = sql.replace("%s", "?")
        return await self._call(lambda c: c.execute(q, tuple(args)).fetchall())

    async def insert(self, sql: str, args: Sequence[Any]) -> int:
        q = sql.replace("%s", "?")
        return await self._call(lambda c: int(c.execute(q, tuple(args)).lastrowid or 0))

    async def _insert_if_new(self, sql: str, args: Sequence[Any]) -> int | None:
        q = sql.replace("%s", "?")
        return await self._call(lambda c: _new_id(c.execute(q, tuple(args))))

    async def begin(self) -> None:
        await self.execute("BEGIN IMMEDIATE")


class SqlitePool(Pool):
    """One sqlite3 connection used from worker threads under a lock.

    SQLite serialises writers anyway; a lock held for the whole of a transaction
    (``acquire`` to release) keeps other coroutines' statements out of it.
    """

    dialect: SqlDialect = "sqlite"

    def __init__(self, url: DbUrl) -> None:
        self.url = url
        self.conn: sqlite3.Connection | None = None
        self.lock = threading.RLock()
        self._txn_lock = asyncio.Lock()

    async def open(self) -> None:
        if self.conn is not None:
            return
        path = self.url.path
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"cannot open {path}: {e}") from e
        self.conn = conn

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        if self.conn is None:
            raise StoreUnavailable("database is closed")
        async with self._txn_lock:
            yield _SqliteConn(self)




# --------------------------------------------------------------------------- writer thread


class ThreadConn(Conn):
    """The writer thread's connection as a :class:`Conn`: each call runs its statement
    at once (no await inside), so a job's coroutine finishes on its first step.

    Statements are in sqlite3's own ``?`` style, as the message store renders them
    once (:class:`~sipsilo.db.dialects.Dialect`): nothing is rewritten per call.

    Driver errors are left as ``sqlite3.Error``: the writer decides whether a failure is
    the job's or the whole batch's, and wraps them for the caller."""

    dialect: SqlDialect = "sqlite"
    returning = RETURNING

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, args).rowcount

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, args).fetchall()

    async def insert(self, sql: str, args: Sequence[Any]) -> int:
        return int(self.conn.execute(sql, args).lastrowid or 0)

    async def _insert_if_new(self, sql: str, args: Sequence[Any]) -> int | None:
        return _new_id(self.conn.execute(sql, args))

    async def begin(self) -> None:
        raise RuntimeError("a writer job runs inside the writer's transaction")


def run_now(coro: Awaitable[T]) -> T:
    """The result of a coroutine that never suspends (a job on a :class:`ThreadConn`)."""
    # A native coroutine (the usual case) is stepped as is, without the ABC checks.
    step: Any = coro if type(coro) is CoroutineType else coro.__await__()
    try:
        step.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    if isinstance(coro, Coroutine):
        coro.close()
    raise RuntimeError("a SQLite writer job awaited something other than its connection")


class BatchStats(Protocol):
    """What the writer counts (the message store's ``StoreStats``)."""

    transactions: int
    operations: int
    stores: int
    max_batch: int
    errors: int


#: A job: called with the thread's connection; may return a coroutine (run to its end).
Job = Callable[[ThreadConn], Any]


@dataclass(slots=True)
class _Job:
    fn: Job
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


class SqliteWriter:
    """One thread, one connection, group commit (see the module text).

    *setup* runs on the thread's connection before the first job (schema creation or
    the version check); its exception fails :meth:`start`.  *max_batch* bounds one
    transaction's size so a huge burst does not hold the write lock for long against
    other processes.
    """

    def __init__(
        self,
        path: str,
        stats: BatchStats,
        setup: Callable[[sqlite3.Connection], None],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 10.0,
        max_batch: int = 1000,
        name: str = "sqlite-writer",
    ) -> None:
        self.path = path
        self.stats = stats
        self.setup = setup
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.max_batch = max(1, max_batch)
        self.name = name
        self._q: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._writer_lock: int | None = None  # fd of <db>-writer, see _txn

    async def start(self) -> None:
        if self._thread is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"{self.name}:{self.path}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            self._thread = None
            raise

    async def stop(self) -> None:
        """Finish the queued jobs and close.  Idempotent."""
        thread = self._thread
        if thread is None or self._closed:
            return
        self._closed = True
        self._q.put(_STOP)  # FIFO: everything queued before is still executed
        await asyncio.to_thread(thread.join)
        self._thread = None

    async def submit(self, fn: Job, readonly: bool = False, is_store: bool = False) -> Any:
        """Queue *fn*; its result once its transaction committed."""
        if self._thread is None or self._closed:
            raise StoreError("message store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._q.put(_Job(fn, fut, loop, readonly, is_store))
        return await fut

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            conn = connect(self.path, busy_timeout=self.busy_timeout, synchronous=self.synchronous)
        except BaseException as e:
            ready.set_exception(StoreError(f"cannot open {self.path}: {e}"))
            return
        try:
            try:
                self.setup(conn)
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
                    target=self._checkpoints, name=f"{self.name}-checkpoint:{self.path}",
                    daemon=True,
                )
                self._checkpointer.start()
            ready.set_result(None)
            self._serve(ThreadConn(conn))
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

    def _serve(self, tc: ThreadConn) -> None:
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
            self._execute(tc, batch)
            if stop:
                return

    # ------------------------------------------------------------------ batching

    def _execute(self, tc: ThreadConn, batch: list[_Job]) -> None:
        try:
            results = self._txn(tc, batch)
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
                        results.extend(self._txn(tc, [job]))
                    except _TxnFailed as e1:
                        results.append((False, _wrap(e1.error)))
                    except Exception as e1:
                        results.append((False, _wrap(e1)))
        self._resolve(batch, results)

    def _txn(self, tc: ThreadConn, batch: list[_Job]) -> list[_Result]:
        if all(j.readonly for j in batch):
            return [(True, _call(j.fn, tc)) for j in batch]
        conn = tc.conn
        lock = self._writer_lock
        if lock is not None:
            self._take_writer_lock(lock)
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise _TxnFailed(e) from e
            try:
                out = [(True, _call(j.fn, tc)) for j in batch]
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

    def _resolve(self, batch: list[_Job], results: list[_Result]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settle]] = {}
        for job, (ok, val) in zip(batch, results, strict=True):
            if not ok:
                self.stats.errors += 1
            by_loop.setdefault(job.loop, []).append((job.fut, ok, val))
        for loop, items in by_loop.items():
            # RuntimeError: the caller's loop is closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)


def _wrap(e: Exception) -> Exception:
    if isinstance(e, sqlite3.Error):
        err = StoreError(f"sqlite: {e}")
        err.__cause__ = e
        return err
    return e


def _settle(items: list[_Settle]) -> None:
    for fut, ok, val in items:
        if fut.done():  # cancelled by its caller
            continue
        if ok:
            fut.set_result(val)
        else:
            fut.set_exception(val)


def _call(fn: Job, tc: ThreadConn) -> Any:
    result = fn(tc)
    if asyncio.iscoroutine(result):
        return run_now(result)
    return result


__all__ = ["RETURNING", "SqlitePool", "SqliteWriter", "ThreadConn", "connect", "run_now"]

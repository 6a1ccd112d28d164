"""The message store on one SQLite file: :class:`~sipsilo.silo.sqlstore.SqlMessageStore`
over SQLite's writer thread (:class:`~sipsilo.db.sqlite.SqliteWriter`).

Every operation is a job of the writer: the thread runs whatever is queued in ONE write
transaction and resolves the callers only after its COMMIT, so a ``store()`` that
returned is durable, and under load one fsync covers a whole batch (group commit; see
:mod:`sipsilo.db.sqlite` for the durability and locking details).  The SQL is the one
of :class:`~sipsilo.silo.ops.MessageOps`, as on the server databases.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, TypeVar

from sipsilo.db.errors import MigrationError
from sipsilo.db.schema import LATEST_VERSION, check_identifier, current_version, migrate
from sipsilo.db.sqlite import Job, SqliteWriter

from .ops import MessageOps
from .sqlstore import Op, SqlMessageStore
from .store import NewMessage, RowId, StoreStats

T = TypeVar("T")


class SqliteSiloStore(SqlMessageStore):
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
        self.ops = MessageOps(self.table, "sqlite")
        self.auto_migrate = auto_migrate
        self.stats = StoreStats()
        self._writer = SqliteWriter(
            self.path, self.stats, self._setup, synchronous=synchronous,
            busy_timeout=busy_timeout, max_batch=max_batch, name="silo-writer")

    def _setup(self, conn: sqlite3.Connection) -> None:
        if self.auto_migrate:
            migrate(conn, "sqlite", self.table)
            return
        v = current_version(conn.cursor(), "sqlite", self.table)
        if v != LATEST_VERSION:
            raise MigrationError(
                f"{self.path}: schema version {v}, need {LATEST_VERSION}; "
                "run 'sipsilo db migrate'"
            )

    async def open(self) -> None:
        await self._writer.start()

    async def close(self) -> None:
        await self._writer.stop()

    async def _submit(self, fn: Job, readonly: bool = False, is_store: bool = False) -> Any:
        return await self._writer.submit(fn, readonly, is_store)

    async def _read(self, fn: Op[T]) -> T:
        result: T = await self._writer.submit(fn, readonly=True)
        return result

    async def _write(self, fn: Op[T]) -> T:
        result: T = await self._writer.submit(fn)
        return result

    async def store(self, msg: NewMessage) -> RowId:
        [(rid, inserted)] = await self._writer.submit(lambda c: self.ops.insert(c, [msg]),
                                                      is_store=True)
        if not inserted:
            self.stats.duplicates += 1
        return RowId(rid, duplicate=not inserted)


__all__ = ["SqliteSiloStore"]

"""MySQL / MariaDB through asyncmy: a small pool and the connection adapter.

asyncmy (not aiomysql: with PyMySQL >= 1.2.3 aiomysql mangles bytes parameters) is
used raw.  Its own pool keeps handing out connections that died with the server, so
this module has its own, small one: a connection that failed at the socket level is
closed instead of returned, and because a server restart kills every idle connection at
once, the idle ones are dropped with it.  The next caller connects afresh, so the store
recovers by itself when the server is back.

Sessions run in autocommit with READ COMMITTED: our transactions are short and keyed,
and READ COMMITTED avoids InnoDB's gap locks, which would make a purge's range DELETE
block concurrent INSERTs of new messages.  The connection charset is utf8mb4, the
charset ``db init`` gives the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncmy
from asyncmy import errors as my_errors

from .base import STATEMENTS, Conn, Pool, Row, is_connection_error, reason
from .errors import StoreConflict, StoreDuplicate, StoreError, StoreUnavailable
from .url import DbUrl, SqlDialect

# asyncmy logs every server note ("Table 'version' already exists" for each
# CREATE TABLE IF NOT EXISTS of `db init`) at WARNING; they are expected, not news.
logging.getLogger("asyncmy").setLevel(logging.ERROR)

#: Server errors meaning "re-run the transaction": deadlock, lock wait timeout.
_CONFLICT = {1213, 1205}
#: ER_DUP_ENTRY: a unique key is taken (the statement alone is undone).
_DUPLICATE_KEY = 1062
#: Client/server errors meaning "this connection (or the server) is gone".
_GONE = {1040, 1045, 1049, 1053, 1927, 2002, 2003, 2006, 2013, 2055, 4031}


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class _MyConn(Conn):
    dialect: SqlDialect = "mysql"
    returning = False

    def __init__(self, conn: Any, url: DbUrl) -> None:
        self._c = conn
        self._url = url
        self.broken = False  # discard this connection
        self.gone = False  # ... and the idle ones: the server went away

    async def _run(self, sql: str, args: Sequence[Any], want: str) -> Any:
        STATEMENTS.n += 1
        try:
            async with self._c.cursor() as cur:
                count = await cur.execute(sql, tuple(args) if args else None)
                if want == "rows":
                    return list(await cur.fetchall())
                if want == "id":
                    return int(cur.lastrowid)
                return int(count or 0)
        except (TimeoutError, my_errors.MySQLError, OSError, RuntimeError) as e:
            code = _code(e)
            if code in _CONFLICT:
                raise StoreConflict(f"mysql: {e}") from e
            if code == _DUPLICATE_KEY:
                raise StoreDuplicate(f"mysql: {e.args[-1]}") from e
            if code in _GONE or is_connection_error(e) or isinstance(e, RuntimeError):
                self.broken = self.gone = True
                where = f"{self._url.host}:{self._url.port}"
                raise StoreUnavailable(f"mysql {where}: {reason(e)}") from e
            raise StoreError(f"mysql: {e.args[-1] if e.args else e}") from e

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        result: int = await self._run(sql, args, "count")
        return result

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        result: list[Row] = await self._run(sql, args, "rows")
        return result

    async def insert(self, sql: str, args: Sequence[Any]) -> int:
        result: int = await self._run(sql, args, "id")
        return result

    async def _insert_rows(self, sql: str, args: Sequence[Any], n: int) -> list[int]:
        # The rows of one statement get consecutive ids from the first (InnoDB's
        # "simple insert", innodb_autoinc_lock_mode 0 or 1, the default); under
        # mode 2 the ids reported here (logged, nothing else) may be off, the rows
        # themselves are right.
        first: int = await self._run(sql, args, "id")
        return [first + i for i in range(n)]

    async def lock(self, name: str) -> None:
        rows = await self.fetch("SELECT GET_LOCK(%s, 60)", (name[:64],))
        if not rows or rows[0][0] != 1:
            raise StoreConflict(f"mysql: could not take lock {name!r} within 60 s")

    async def unlock(self, name: str) -> None:
        await self.fetch("SELECT RELEASE_LOCK(%s)", (name[:64],))


class MysqlPool(Pool):
    dialect: SqlDialect = "mysql"

    def __init__(self, url: DbUrl, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max(1, max_size, min_size)
        self._idle: list[Any] = []
        self._sem = asyncio.Semaphore(self.max_size)
        self._open = False

    async def _connect(self) -> Any:
        u = self.url
        return await asyncio.wait_for(
            asyncmy.connect(
                host=u.host,
                port=u.port,
                user=u.user or "root",
                password=u.password or "",
                database=u.database,
                autocommit=True,
                charset="utf8mb4",
                init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                connect_timeout=max(1, int(u.connect_timeout)),
            ),
            u.connect_timeout + 1,
        )

    async def open(self) -> None:
        if self._open:
            return
        try:
            # At least one connection, even with db_pool_min = 0: a bad URL or password
            # must fail at start-up, not at the first MESSAGE.
            for _ in range(max(1, self.min_size)):
                self._idle.append(await self._connect())
        except Exception as e:
            self._drop_idle()
            raise StoreUnavailable(f"cannot connect to {self.url.masked}: {reason(e)}") from e
        self._open = True

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for c in idle:
            with contextlib.suppress(Exception):
                c.close()

    async def close(self) -> None:
        self._open = False
        self._drop_idle()

    def usage(self) -> tuple[int, int, int] | None:
        in_use = self.max_size - self._sem._value  # holders of the semaphore
        return len(self._idle) + in_use, in_use, self.max_size

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        if not self._open:
            raise StoreUnavailable("database is closed")
        async with self._sem:
            if self._idle:
                raw = self._idle.pop()
            else:
                try:
                    raw = await self._connect()
                except Exception as e:
                    raise StoreUnavailable(
                        f"cannot connect to {self.url.masked}: {reason(e)}"
                    ) from e
            conn = _MyConn(raw, self.url)
            try:
                yield conn
            except BaseException as e:
                if not isinstance(e, StoreError):
                    # Cancelled mid-statement: the protocol state is unknown.
                    conn.broken = True
                raise
            finally:
                if conn.broken or not self._open:
                    with contextlib.suppress(Exception):
                        raw.close()
                    if conn.gone:
                        self._drop_idle()  # they died with the same server
                else:
                    self._idle.append(raw)

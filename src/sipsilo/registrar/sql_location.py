"""A location service in SQL, shared by every sipsilo instance on the same database.

``[registrar] db_url`` unset keeps bindings in memory (``MemoryLocationService``); set to
``sqlite:///``, ``mysql://`` or ``postgresql://`` it stores them in the table
``sipsilo_location``, one row per (AoR, contact), with the whole :class:`Binding`
including the flow the REGISTER came on and the ``instance`` that received it.  A
MESSAGE arriving at instance A then finds bob registered at instance B.

Flows belong to the process that holds the socket.  A connection id means nothing in
another process (worse: it may name an unrelated connection there), so a binding read by
an instance that does not own it comes back with ``conn_id = None``, and for UDP with
the Contact's address as the remote end: another instance reaches the UA directly at
its Contact URI (UDP and TCP alike), never through a flow it does not have.  A UA
behind NAT that can only be reached over its own flow should register with every
instance it wants to be reached through, or use one instance as outbound proxy.

The driver layer is the message store's (:mod:`sipsilo.db`): the same URLs, pools and
one-line connection errors.  The table is ours, not Kamailio's ``location``:
Kamailio's usrloc columns cannot hold a flow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sipsilo.db.base import Conn, Pool, Row, open_pool, run_txn
from sipsilo.db.dialects import DIALECTS
from sipsilo.db.errors import StoreUnavailable
from sipsilo.db.schema import check_identifier
from sipsilo.db.url import SqlDialect
from sipsilo.flow import Flow
from sipsilo.registrar.binding import Binding, normalise_aor
from sipsilo.registrar.location import (
    LocationService,
    MemoryLocationService,
    keyed,
    lookup_order,
)
from sipsilo.sip.errors import ParseError
from sipsilo.sip.uri import SipUri, is_ip_address

if TYPE_CHECKING:
    from sipsilo.config import Config  # the server's; domain code needs no transport

BindingList = list[Binding]

DEFAULT_TABLE = "sipsilo_location"

# Column order of every SELECT and INSERT below (id_hash first, owner last).
_COLS = (
    "id_hash", "aor", "contact", "params", "expires_at", "call_id", "cseq", "transport",
    "local_host", "local_port", "remote_host", "remote_port", "conn_id", "q", "user_agent",
    "methods", "instance_id", "reg_id", "registered_at", "instance", "owner",
)
_SELECT = ", ".join(_COLS[1:])


def create_sql(table: str, dialect: SqlDialect) -> list[str]:
    """DDL for the bindings table (idempotent statements)."""
    t = check_identifier(table)
    dbl = {"mysql": "DOUBLE", "postgresql": "DOUBLE PRECISION", "sqlite": "REAL"}[dialect]
    cols = [
        # sha256 of aor NUL contact: a fixed-width key, because a Contact URI has no
        # useful length bound and MySQL caps index key length.
        "id_hash CHAR(64) PRIMARY KEY NOT NULL",
        "aor VARCHAR(255) NOT NULL",
        "contact TEXT NOT NULL",
        "params TEXT NOT NULL",  # JSON [[name, value-or-null], ...]
        f"expires_at {dbl} NOT NULL",
        "call_id TEXT NOT NULL",
        "cseq BIGINT NOT NULL",
        "transport VARCHAR(8) NOT NULL",
        "local_host VARCHAR(64) NOT NULL",
        "local_port INTEGER NOT NULL",
        "remote_host VARCHAR(64) NOT NULL",
        "remote_port INTEGER NOT NULL",
        "conn_id BIGINT",
        f"q {dbl} NOT NULL",
        "user_agent TEXT",
        "methods TEXT",  # JSON list, NULL = not advertised
        "instance_id TEXT",
        "reg_id BIGINT",
        f"registered_at {dbl} NOT NULL",
        "instance VARCHAR(128) NOT NULL",  # the sipsilo process that owns the flow
        # The flow owner's hop URI (routing.handover): how another instance reaches
        # the process holding the connection; NULL: not reachable that way.
        "owner VARCHAR(255)",
    ]
    if dialect == "mysql":  # MySQL has no CREATE INDEX IF NOT EXISTS: inline them
        cols += ["INDEX aor_idx (aor)", "INDEX expires_idx (expires_at)"]
        body = ",\n    ".join(cols)
        return [f"CREATE TABLE IF NOT EXISTS {t} (\n    {body}\n) DEFAULT CHARSET=utf8mb4"]
    body = ",\n    ".join(cols)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (\n    {body}\n)",
        f"CREATE INDEX IF NOT EXISTS {t}_aor_idx ON {t} (aor)",
        f"CREATE INDEX IF NOT EXISTS {t}_expires_idx ON {t} (expires_at)",
    ]


def _key(aor: str, contact: str) -> str:
    return hashlib.sha256(f"{aor}\0{contact}".encode()).hexdigest()


def _foreign_flow(flow: Flow, contact: str) -> Flow:
    """The flow as another instance may use it: no connection, UDP straight to the Contact."""
    remote_host, remote_port = flow.remote
    if flow.transport == "udp":
        try:
            uri = SipUri.parse(contact)
        except ParseError:
            uri = None
        if uri is not None and is_ip_address(uri.host):
            remote_host, remote_port = uri.host, uri.port or 5060
    return dataclasses.replace(flow, remote=(remote_host, remote_port), conn_id=None)


class SqlLocationService(LocationService):
    """:class:`LocationService` on a SQL table shared by instances (see the module doc)."""

    def __init__(self, pool: Pool, instance: str, table: str = DEFAULT_TABLE) -> None:
        self.pool = pool
        self.instance = instance[:128]
        self.table = check_identifier(table)
        t = self.table
        marks = ", ".join(["%s"] * len(_COLS))
        head = f"INSERT INTO {t} ({', '.join(_COLS)}) VALUES ({marks})"
        self._sql_save = DIALECTS[pool.dialect].upsert(head, "id_hash", _COLS[1:])

    async def open(self) -> None:
        await self.pool.open()
        statements = create_sql(self.table, self.pool.dialect)

        async def create(c: Conn) -> None:
            for sql in statements:
                await c.execute(sql)

        try:
            async with self.pool.acquire() as conn:
                # Instances starting together must not race on the catalog.
                await conn.lock(f"sipsilo_ddl_{self.table}")
                try:
                    await create(conn)
                    await self._add_owner_column(conn)
                finally:
                    await conn.unlock(f"sipsilo_ddl_{self.table}")
        except BaseException:
            await self.pool.close()
            raise

    async def _add_owner_column(self, conn: Conn) -> None:
        """A table made before the owner column (issue 16) gets it."""
        try:
            await conn.fetch(f"SELECT owner FROM {self.table} WHERE 1 = 0")
        except Exception as missing:  # (outside a transaction: nothing to undo)
            # Drivers word "no such column" differently (SQLite's even reads as
            # unavailable): add it, and if that fails too, the first error is the one.
            try:
                await conn.execute(f"ALTER TABLE {self.table} ADD COLUMN owner VARCHAR(255)")
            except Exception:
                raise missing from None

    async def aclose(self) -> None:
        await self.pool.close()

    # ------------------------------------------------------------------ rows

    def _to_row(self, b: Binding) -> tuple[Any, ...]:
        f = b.flow
        return (
            _key(b.aor, b.contact), b.aor, b.contact, json.dumps([list(p) for p in b.params]),
            float(b.expires_at), b.call_id, int(b.cseq), f.transport, f.local[0],
            int(f.local[1]), f.remote[0], int(f.remote[1]), f.conn_id, float(b.q),
            b.user_agent, None if b.methods is None else json.dumps(sorted(b.methods)),
            b.instance_id, b.reg_id, float(b.registered_at), self.instance, f.owner,
        )

    def _from_row(self, r: Row) -> Binding:
        (aor, contact, params, expires_at, call_id, cseq, transport, local_host, local_port,
         remote_host, remote_port, conn_id, q, user_agent, methods, instance_id, reg_id,
         registered_at, instance, owner) = r
        flow = Flow(
            transport,
            (local_host, int(local_port)),
            (remote_host, int(remote_port)),
            None if conn_id is None else int(conn_id),
            owner or None,
        )
        if instance != self.instance and not flow.owner:
            # No hop to the process holding the connection: reach the Contact.
            flow = _foreign_flow(flow, contact)
        return Binding(
            aor=aor,
            contact=contact,
            params=tuple((str(k), None if v is None else str(v)) for k, v in json.loads(params)),
            expires_at=float(expires_at),
            call_id=call_id,
            cseq=int(cseq),
            flow=flow,
            q=float(q),
            user_agent=user_agent,
            methods=None if methods is None else frozenset(json.loads(methods)),
            instance_id=instance_id,
            reg_id=None if reg_id is None else int(reg_id),
            registered_at=float(registered_at),
        )

    async def _fetch(self, where: str, args: Sequence[Any]) -> BindingList:
        sql = f"SELECT {_SELECT} FROM {self.table} WHERE {where}"
        rows = await run_txn(self.pool, lambda c: c.fetch(sql, args), txn=False)
        return [self._from_row(r) for r in rows]

    async def _delete(self, found: BindingList, extra: str = "", args: Sequence[Any] = ()) -> (
        BindingList
    ):
        """Delete *found* row by row; return those this call deleted (an instance racing
        us for the same row gets rowcount 0 and does not report it twice)."""
        if not found:
            return []
        sql = f"DELETE FROM {self.table} WHERE id_hash = %s{extra}"

        async def run(c: Conn) -> BindingList:
            return [b for b in found if await c.execute(sql, (_key(b.aor, b.contact), *args))]

        return await run_txn(self.pool, run)

    # ------------------------------------------------------------------ API

    async def lookup(self, aor: str, now: float) -> BindingList:
        live = await self._fetch("aor = %s AND expires_at > %s", (normalise_aor(aor), now))
        live.sort(key=lookup_order)
        return live

    async def save(self, binding: Binding) -> None:
        row = self._to_row(keyed(binding))
        await run_txn(self.pool, lambda c: c.execute(self._sql_save, row), txn=False)

    async def remove(self, aor: str, contact: str) -> Binding | None:
        key = normalise_aor(aor)
        found = await self._fetch("id_hash = %s", (_key(key, contact),))
        gone = await self._delete(found)
        return gone[0] if gone else None

    async def remove_all(self, aor: str) -> BindingList:
        gone = await self._delete(await self._fetch("aor = %s", (normalise_aor(aor),)))
        return sorted(gone, key=lookup_order)

    async def expire(self, now: float) -> BindingList:
        # Every instance sweeps; the per-row "AND expires_at <= now" re-check keeps a
        # binding refreshed meanwhile, and rowcount decides who reports the expiry.
        found = await self._fetch("expires_at <= %s", (now,))
        return await self._delete(found, " AND expires_at <= %s", (now,))

    async def list(self, aor: str | None = None, now: float | None = None) -> BindingList:
        where = ["1 = 1"]
        args: tuple[Any, ...] = ()
        if aor is not None:
            where.append("aor = %s")
            args += (normalise_aor(aor),)
        if now is not None:
            where.append("expires_at > %s")
            args += (now,)
        found = await self._fetch(" AND ".join(where), args)
        found.sort(key=lambda b: (b.aor, *lookup_order(b)))
        return found


def instance_name(instance_id: str | None = None) -> str:
    """This process's name in the ``instance`` column: the cluster instance id when
    known (``sipsilo cluster status`` counts bindings by it, the part before "|"),
    then host, pid and a random part (pids are reused; a connection number means
    something only in the very process that wrote it)."""
    own = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
    return own if instance_id is None else f"{instance_id[:60]}|{own}"


async def open_location(config: Config, instance_id: str | None = None) -> LocationService:
    """The location service ``config.registrar.db_url`` asks for, opened.

    None: in memory.  Otherwise a :class:`SqlLocationService` with a pool sized by
    ``[msilo] db_pool_min/db_pool_max``; a connection failure raises StoreUnavailable
    naming ``registrar.db_url``.
    """
    url = config.registrar_db
    if url is None:
        return MemoryLocationService()
    pool = open_pool(url, config.msilo.db_pool_min, config.msilo.db_pool_max)
    service = SqlLocationService(pool, instance_name(instance_id))
    try:
        await service.open()
    except StoreUnavailable as e:
        raise url.unavailable(e) from e
    return service


__all__ = ["DEFAULT_TABLE", "SqlLocationService", "create_sql", "instance_name", "open_location"]

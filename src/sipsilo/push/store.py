"""All SQL of push notifications and reminders: push targets, and due reminders.

Push targets: where an AoR's sleeping phone can be woken (RFC 8599).

A phone that supports RFC 8599 registers a Contact whose URI carries ``pn-provider``,
``pn-prid`` (its token at the push service), ``pn-param`` (what the provider needs
besides: an APNs topic, a Web Push key pair...) and maybe ``pn-purr``. The binding keeps
them (they are part of the Contact). Each such REGISTER also saves them here as the
AoR's *last push target*, which outlives the binding: a phone whose registration ran
out while it slept is exactly the one that needs waking. A target not refreshed for
``[push] keep_days`` is forgotten, and one the provider calls dead (410, 404,
``UNREGISTERED``) is removed at once.

The table, ``<silo table>_push``, is created by the message store's migration 4
(its DDL is in ``db.schema``), and again (idempotent) when this store opens.

Reminders (Kamailio msilo's ``snd_time``): a row of the silo table whose ``snd_time``
is set is not dumped on REGISTER (the store's delivery queries skip ``snd_time > 0``);
at its time it is claimed here, sent to the user's current contact, and deleted, or,
when that fails, turned into an ordinary stored message (``snd_time = 0``) for the
next REGISTER, as Kamailio does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sipsilo.db import base as sqlbase
from sipsilo.db.schema import push_table_name, push_table_sql
from sipsilo.db.url import DbUrl, parse_db_url
from sipsilo.silo.store import StoredMessage

PN_PARAMS = ("pn-provider", "pn-prid", "pn-param", "pn-purr")


@dataclass(frozen=True, slots=True)
class PushTarget:
    aor: str
    provider: str
    prid: str
    param: str = ""
    purr: str = ""
    updated_at: int = 0


def target_of_contact(
    aor: str, uri_params: Sequence[tuple[str, str | None]],
    header_params: Sequence[tuple[str, str | None]] = (), now: float | None = None,
) -> PushTarget | None:
    """The push target a Contact names: RFC 8599 puts ``pn-*`` in the Contact URI;
    some phones put them on the Contact header instead, which is read second.
    Values are %-unescaped (a Web Push endpoint URL cannot appear raw in a URI
    parameter). None without both ``pn-provider`` and ``pn-prid``."""
    found: dict[str, str] = {}
    for params in (header_params, uri_params):  # the URI wins
        for name, value in params:
            key = name.lower()
            if key in PN_PARAMS and value:
                found[key] = unquote(value.strip('"'))
    provider, prid = found.get("pn-provider", ""), found.get("pn-prid", "")
    if not provider or not prid:
        return None
    return PushTarget(aor, provider.lower(), prid, found.get("pn-param", ""),
                      found.get("pn-purr", ""), int(time.time() if now is None else now))


class PushStore:
    """Last push target per AoR, and reminders, in the message store's database."""

    def __init__(self, db_url: DbUrl | str, silo_table: str, data_dir: str | Path | None,
                 keep_days: int) -> None:
        """*db_url*: the configuration's parsed URL (the server), or a string parsed
        here (*data_dir* resolves a relative SQLite path), as silo.backend.open_store."""
        self.table = push_table_name(silo_table)
        self.silo = silo_table
        url = db_url if isinstance(db_url, DbUrl) else parse_db_url(db_url, data_dir=data_dir)
        self._pool = sqlbase.open_pool(url, 0, 2)
        self.keep = keep_days * 86400

    async def open(self) -> None:
        await self._pool.open()
        async def create(conn: sqlbase.Conn) -> None:
            for sql in push_table_sql(self.silo, conn.dialect):
                await conn.execute(sql)

        await sqlbase.run_txn(self._pool, create, txn=False)

    async def close(self) -> None:
        await self._pool.close()

    async def save(self, target: PushTarget) -> None:
        async def txn(conn: sqlbase.Conn) -> None:
            await conn.execute(f"DELETE FROM {self.table} WHERE aor = %s", (target.aor,))
            await conn.execute(
                f"INSERT INTO {self.table} (aor, provider, prid, param, purr, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (target.aor, target.provider, target.prid, target.param, target.purr,
                 target.updated_at))

        await sqlbase.run_txn(self._pool, txn)

    async def get(self, aor: str, now: float) -> PushTarget | None:
        """The AoR's target unless it is older than ``keep_days``."""
        async def q(conn: sqlbase.Conn) -> list[Any]:
            return await conn.fetch(
                f"SELECT aor, provider, prid, param, purr, updated_at FROM {self.table}"
                " WHERE aor = %s AND updated_at > %s", (aor, int(now) - self.keep))

        rows = await sqlbase.run_txn(self._pool, q, txn=False)
        if not rows:
            return None
        r = rows[0]
        return PushTarget(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]))

    async def remove(self, aor: str, prid: str) -> bool:
        """Forget a dead token; a newer token saved meanwhile stays."""
        async def q(conn: sqlbase.Conn) -> int:
            return await conn.execute(
                f"DELETE FROM {self.table} WHERE aor = %s AND prid = %s", (aor, prid))

        return bool(await sqlbase.run_txn(self._pool, q, txn=False))

    async def purge(self, now: float) -> int:
        """Forget targets not refreshed for ``keep_days``."""
        async def q(conn: sqlbase.Conn) -> int:
            return await conn.execute(
                f"DELETE FROM {self.table} WHERE updated_at <= %s", (int(now) - self.keep,))

        return int(await sqlbase.run_txn(self._pool, q, txn=False))

    # ------------------------------------------------------------ reminders
    async def set_send_time(self, row_id: int, snd_time: int) -> None:
        """Make a stored row a reminder due at *snd_time*."""
        async def q(conn: sqlbase.Conn) -> int:
            return await conn.execute(
                f"UPDATE {self.silo} SET snd_time = %s WHERE id = %s", (snd_time, row_id))

        await sqlbase.run_txn(self._pool, q, txn=False)

    async def claim_due(self, now: int, owner: str, until: int, limit: int = 32
                        ) -> list[StoredMessage]:
        """Claim the reminders due by *now* (unexpired, not held by a live claim)."""
        async def txn(conn: sqlbase.Conn) -> list[StoredMessage]:
            rows = await conn.fetch(
                "SELECT id, src_addr, dst_addr, username, domain, inc_time, exp_time,"
                " COALESCE(ctype_full, ctype), body, extra_hdrs, callid"
                f" FROM {self.silo} WHERE snd_time > 0 AND snd_time <= %s AND exp_time > %s"
                " AND (claim_owner IS NULL OR claim_until < %s) ORDER BY snd_time, id"
                f" LIMIT {int(limit)}", (now, now, now))
            out = []
            for r in rows:
                taken = await conn.execute(
                    f"UPDATE {self.silo} SET claim_owner = %s, claim_until = %s"
                    " WHERE id = %s AND snd_time > 0 AND (claim_owner IS NULL"
                    " OR claim_until < %s)", (owner, until, r[0], now))
                if taken:
                    out.append(StoredMessage(
                        src_addr=str(r[1]), dst_addr=str(r[2]), username=str(r[3]),
                        domain=str(r[4]), inc_time=int(r[5]), exp_time=int(r[6]),
                        ctype=str(r[7]), body=bytes(r[8] or b""), extra_hdrs=str(r[9] or ""),
                        callid=str(r[10] or ""), id=int(r[0])))
            return out

        return await sqlbase.run_txn(self._pool, txn)

    async def reminder_sent(self, row_id: int, owner: str) -> None:
        async def q(conn: sqlbase.Conn) -> int:
            return await conn.execute(
                f"DELETE FROM {self.silo} WHERE id = %s AND claim_owner = %s", (row_id, owner))

        await sqlbase.run_txn(self._pool, q, txn=False)

    async def reminder_failed(self, row_id: int, owner: str) -> None:
        """Kept for the next REGISTER: an ordinary stored message from now on."""
        async def q(conn: sqlbase.Conn) -> int:
            return await conn.execute(
                f"UPDATE {self.silo} SET snd_time = 0, claim_owner = NULL, claim_until = 0"
                " WHERE id = %s AND claim_owner = %s", (row_id, owner))

        await sqlbase.run_txn(self._pool, q, txn=False)

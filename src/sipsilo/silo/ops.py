"""The message store's SQL, written once for SQLite, MySQL/MariaDB and PostgreSQL.

:class:`MessageOps` holds the statements of one table in one dialect, and runs each store
operation on a :class:`~sipsilo.db.base.Conn` it is handed.  Who hands it the connection
is the backend's business: SQLite's writer thread (one transaction for a batch of jobs,
:class:`~sipsilo.silo.sqlite.SqliteSiloStore`) or a server pool
(:class:`~sipsilo.silo.sqlstore.SqlSiloStore`).

Claims are compare-and-set, never long row locks::

    SELECT id, claim_owner, claim_until ... WHERE account AND deliverable ORDER BY id LIMIT n
    UPDATE ... SET claim_owner = me ... WHERE id IN (..)
               AND (claim_owner IS NULL OR claim_until < now)

The UPDATE re-checks "free" on the current row version (PostgreSQL re-evaluates the WHERE
after waiting for a row lock, InnoDB updates read the latest version), so of two
instances racing for a row exactly one gets it; the loser scans again, now sees the row
held by someone else before its candidates, and gets nothing, which keeps the
per-account order across instances.  ``SELECT ... FOR UPDATE SKIP LOCKED`` was not used
because skipping a locked row is exactly how a later message would overtake it.  On
SQLite the whole claim runs inside the writer's transaction, so the UPDATE always wins.

Every statement of the delivery path is keyed by the primary key, the (username, domain)
index or the exp_time index: tests check the query plans.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sipsilo.db.base import Conn, Row
from sipsilo.db.dialects import DIALECTS
from sipsilo.db.errors import StoreDuplicate
from sipsilo.db.schema import check_identifier
from sipsilo.db.url import SqlDialect

from .store import PURGE_CHUNK, NewMessage, StoredMessage

COLS = (
    "id, src_addr, dst_addr, username, domain, inc_time, exp_time, snd_time, ctype,"
    " ctype_full, body, extra_hdrs, callid, status, attempts, claim_owner, claim_until"
)
_SCAN = 16  # rows per claim scan; more than a handful are held by the same owner only
_CAS_TRIES = 50  # claim lost to another instance: rescan, bounded in case of a livelock

# One multi-row INSERT carries at most this many rows or bytes of bodies: well
# inside MySQL's max_allowed_packet (16 MiB by default) and PostgreSQL's 65535
# parameters, large enough that a busy second needs few round trips.
_CHUNK_ROWS = 100
_CHUNK_BYTES = 1 << 20


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


def list_filter(
    username: str | None, domain: str | None, after_id: int
) -> tuple[str, list[Any]]:
    """The WHERE condition and arguments of ``list_messages``."""
    where = ["id > %s"]
    args: list[Any] = [after_id]
    if username is not None:
        where.append("username = %s")
        args.append(username)
    if domain is not None:
        where.append("domain = %s")
        args.append(domain)
    return " AND ".join(where), args


def _chunks(msgs: Sequence[NewMessage]) -> list[list[NewMessage]]:
    out: list[list[NewMessage]] = []
    size = 0
    for m in msgs:
        body = len(m.body)
        if not out or len(out[-1]) >= _CHUNK_ROWS or size + body > _CHUNK_BYTES:
            out.append([])
            size = 0
        out[-1].append(m)
        size += body
    return out


class MessageOps:
    """The statements of one message table, and the operations built from them."""

    def __init__(self, table: str, dialect: SqlDialect) -> None:
        t = self.table = check_identifier(table)
        d = self.dialect = DIALECTS[dialect]
        q = d.sql
        self.sql_insert_into = (
            f"INSERT INTO {t} (src_addr, dst_addr, username, domain, inc_time, exp_time,"
            " snd_time, ctype, ctype_full, body, extra_hdrs, callid, status, msg_key) VALUES "
        )
        self.sql_insert_row = q("(%s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s, 0, %s)")
        self.sql_by_key = q(f"SELECT id FROM {t} WHERE msg_key = %s")
        self.sql_count_from = q(f"SELECT COUNT(*) FROM {t} WHERE src_addr = %s")
        self.sql_count_for = q(
            f"SELECT COUNT(*) FROM {t}"
            " WHERE username = %s AND domain = %s AND snd_time = 0 AND exp_time > %s"
        )
        # The (username, domain) index stores ids in order, so ORDER BY id needs no sort.
        self.sql_claim_scan = q(
            f"SELECT id, claim_owner, claim_until FROM {t} WHERE username = %s AND domain = %s"
            f" AND snd_time = 0 AND exp_time > %s AND id > %s ORDER BY id LIMIT {_SCAN}"
        )
        self.sql_claim = q(
            f"UPDATE {t} SET claim_owner = %s, claim_until = %s, attempts = attempts + 1"
            " WHERE id = %s AND snd_time = 0 AND exp_time > %s"
            " AND (claim_owner IS NULL OR claim_until < %s)"
        )
        self.sql_get = q(f"SELECT {COLS} FROM {t} WHERE id = %s")
        # In chunks, each its own statement (or writer job), so a large purge never
        # holds the write lock against stores and claims for long.
        self.sql_purge_expired = q(d.delete_limited(t, "exp_time <= %s", PURGE_CHUNK))
        self.sql_release = f"UPDATE {t} SET claim_owner = NULL, claim_until = 0 WHERE"
        # Claims whose attempt never concluded (our process stopped or died
        # before the phone answered): the claim's attempt is taken back, so a
        # message never tried counts as waiting again (silo.cluster
        # pending_elsewhere_sql), and a live MESSAGE queues behind it instead
        # of overtaking it.
        self.sql_release_untried = (
            f"UPDATE {t} SET claim_owner = NULL, claim_until = 0,"
            " attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END WHERE")
        self.sql_delete = f"DELETE FROM {t} WHERE"

    # ------------------------------------------------------------------ store

    async def insert(self, c: Conn, msgs: Sequence[NewMessage]) -> list[tuple[int, bool]]:
        """Insert *msgs*; for each (row id, inserted).  A message stored before under
        its ``msg_key`` (a re-send, a retransmission after a restart), or repeated
        within *msgs*, is answered with the first row's id and not inserted again.
        Run inside the caller's transaction (the unique index on ``msg_key`` guards
        against other instances).

        Optimistic: the INSERT itself skips a taken key (Conn.insert_new), so the
        usual message costs one statement; only a skipped one is looked up."""
        ids: list[int | None] = []
        try:
            for chunk in _chunks(msgs):
                ids += await c.insert_new(self.sql_insert_into, self.sql_insert_row,
                                          [m.insert_values() for m in chunk], "msg_key", -1)
        except StoreDuplicate:
            # MySQL: this chunk's statement is undone, the chunks before it stay (and
            # are found by the look-up, so a later repeat of theirs maps to them).
            done = len(ids)
            rest = await self._insert_looking_first(c, msgs[done:])
            return [(i, True) for i in ids if i is not None] + rest
        if all(i is not None for i in ids):
            return [(i, True) for i in ids if i is not None]
        skipped = [m for m, i in zip(msgs, ids, strict=True) if i is None]
        known = await self._known_keys(c, skipped)
        # Skipped for a row another instance had committed, and that row is
        # already delivered and deleted: not stored any more, so stored now.
        gone = [m for m in skipped if (m.msg_key or "") not in known]
        if gone:
            for m, (rid, _) in zip(gone, await self._insert_looking_first(c, gone),
                                   strict=True):
                known.setdefault(m.msg_key or "", rid)
        fresh = {m.msg_key for m in gone}
        out: list[tuple[int, bool]] = []
        for m, i in zip(msgs, ids, strict=True):
            if i is not None:
                out.append((i, True))
            else:
                out.append((known[m.msg_key or ""], m.msg_key in fresh))
                fresh.discard(m.msg_key)  # a repeat of it in this batch: not new again
        return out

    async def _insert_looking_first(
        self, c: Conn, msgs: Sequence[NewMessage]
    ) -> list[tuple[int, bool]]:
        """:meth:`insert` for a database that cannot skip a taken key: look the keys
        up, then insert the others."""
        known = await self._known_keys(c, msgs)
        fresh: list[int] = []  # positions to insert
        for i, m in enumerate(msgs):
            key = m.msg_key
            if key is None or key not in known:
                fresh.append(i)
                if key is not None:
                    known[key] = -1  # a repeat later in the batch: not again
        ids: list[int] = []
        for chunk in _chunks([msgs[i] for i in fresh]):
            ids += await c.insert_many(self.sql_insert_into, self.sql_insert_row,
                                       [m.insert_values() for m in chunk])
        new_id = dict(zip(fresh, ids, strict=True))
        for i, rid in new_id.items():
            key = msgs[i].msg_key
            if key is not None:
                known[key] = rid
        return [(new_id[i], True) if i in new_id else (known[m.msg_key or ""], False)
                for i, m in enumerate(msgs)]

    async def _known_keys(self, c: Conn, msgs: Sequence[NewMessage]) -> dict[str, int]:
        """msg_key -> id of the rows already stored for the keys of *msgs*."""
        keys = list({m.msg_key for m in msgs if m.msg_key is not None})
        if not keys:
            return {}
        rows = await c.fetch(
            f"SELECT msg_key, id FROM {self.table} WHERE msg_key IN"
            f" ({self.dialect.marks(len(keys))})", keys)
        return {str(k): int(i) for k, i in rows}

    async def stored_id(self, c: Conn, msg_key: str) -> int | None:
        rows = await c.fetch(self.sql_by_key, (msg_key,))
        return int(rows[0][0]) if rows else None

    async def count_for(self, c: Conn, username: str, domain: str, now: int) -> int:
        return int((await c.fetch(self.sql_count_for, (username, domain, int(now))))[0][0])

    async def count_from(self, c: Conn, src_addr: str) -> int:
        return int((await c.fetch(self.sql_count_from, (src_addr,)))[0][0])

    # ------------------------------------------------------------------ claims

    async def claim_batch(
        self, c: Conn, username: str, domain: str, owner: str, now: int, claim_ttl: int,
        limit: int,
    ) -> list[StoredMessage]:
        """Claim a run of up to *limit* messages with one compare-and-set UPDATE.

        If another instance raced us for some of the rows, only the run's longest
        prefix that we hold is kept (the rest is released): the instance holding the
        lowest row goes on, the other one stops, as with single claims.
        """
        now, until = int(now), int(now) + int(claim_ttl)
        for _ in range(_CAS_TRIES):
            chosen = await self._candidates(c, username, domain, owner, now, max(1, limit))
            if not chosen:
                return []
            held = await self._cas(c, chosen, owner, now, until)
            run: list[StoredMessage] = []
            for rid in chosen:
                if rid not in held:
                    break
                run.append(held.pop(rid))
            if held:  # rows after a gap: give them back, order first
                await self.by_ids(c, self.sql_release, list(held), owner)
            if run:
                return run
        return []

    async def _candidates(
        self, c: Conn, username: str, domain: str, owner: str, now: int, limit: int
    ) -> list[int]:
        """The next free rows in id order, stopping at a row another owner holds."""
        chosen: list[int] = []
        after = 0
        while True:
            rows = await c.fetch(self.sql_claim_scan, (username, domain, now, after))
            for rid, holder, held_until in rows:
                if holder is None or int(held_until) < now:  # free, or a lapsed claim
                    chosen.append(int(rid))
                    if len(chosen) >= limit:
                        return chosen
                elif holder != owner:  # an earlier message is in flight elsewhere
                    return chosen
            if len(rows) < _SCAN:
                return chosen
            after = int(rows[-1][0])

    async def _cas(
        self, c: Conn, ids: list[int], owner: str, now: int, until: int
    ) -> dict[int, StoredMessage]:
        marks = self.dialect.marks(len(ids))
        m = self.dialect.mark
        sql = self.sql_claim.replace(f"id = {m}", f"id IN ({marks})", 1)
        args = (owner, until, *ids, now, now)
        if c.returning:
            rows = await c.fetch(f"{sql} RETURNING {COLS}", args)
        elif not await c.execute(sql, args):
            rows = []
        else:
            # Read back only the rows this UPDATE gave us.
            rows = await c.fetch(
                f"SELECT {COLS} FROM {self.table} WHERE id IN ({marks})"
                f" AND claim_owner = {m} AND claim_until = {m}",
                (*ids, owner, until),
            )
        return {int(r[0]): to_message(r) for r in rows}

    async def by_ids(self, c: Conn, head: str, ids: Sequence[int], owner: str | None) -> int:
        """*head* (``sql_delete`` or ``sql_release``) on the rows *ids*, only those
        *owner* holds if given; the rows affected."""
        if not ids:
            return 0
        m = self.dialect.mark
        sql = f"{head} id IN ({self.dialect.marks(len(ids))})"
        if owner is None:
            return await c.execute(sql, ids)
        return await c.execute(sql + f" AND claim_owner = {m}", (*ids, owner))

    async def extend_claims(self, c: Conn, ids: Sequence[int], owner: str, until: int
                            ) -> list[int]:
        if not ids:
            return []
        marks, m = self.dialect.marks(len(ids)), self.dialect.mark
        await c.execute(
            f"UPDATE {self.table} SET claim_until = {m} WHERE id IN ({marks})"
            f" AND claim_owner = {m}",
            (int(until), *ids, owner),
        )
        rows = await c.fetch(
            f"SELECT id FROM {self.table} WHERE id IN ({marks}) AND claim_owner = {m}"
            " ORDER BY id",
            (*ids, owner),
        )
        return [int(r[0]) for r in rows]

    async def claimed_for(self, c: Conn, owner: str) -> list[tuple[str, str]]:
        rows = await c.fetch(
            f"SELECT DISTINCT username, domain FROM {self.table}"
            f" WHERE claim_owner = {self.dialect.mark}", (owner,))
        return [(str(r[0]), str(r[1])) for r in rows]

    async def release_owner(self, c: Conn, owner: str) -> int:
        return await c.execute(
            f"{self.sql_release_untried} claim_owner = {self.dialect.mark}", (owner,))

    # ------------------------------------------------------------------ admin

    async def list_messages(
        self, c: Conn, username: str | None, domain: str | None, limit: int, after_id: int
    ) -> list[StoredMessage]:
        where, args = list_filter(username, domain, after_id)
        sql = self.dialect.sql(
            f"SELECT {COLS} FROM {self.table} WHERE {where} ORDER BY id LIMIT {int(limit)}")
        return [to_message(r) for r in await c.fetch(sql, args)]

    async def get(self, c: Conn, id: int) -> StoredMessage | None:
        rows = await c.fetch(self.sql_get, (id,))
        return to_message(rows[0]) if rows else None

    async def delete_where(self, c: Conn, where: str, args: Sequence[Any] = ()) -> int:
        """``DELETE`` of the rows matching *where*: our own SQL text (``%s``), never
        user input."""
        return await c.execute(self.dialect.sql(f"{self.sql_delete} {where}"), args)

    async def count(self, c: Conn) -> int:
        return int((await c.fetch(f"SELECT COUNT(*) FROM {self.table}"))[0][0])

    async def waiting(self, c: Conn) -> list[Row]:
        """(username, domain, rows, oldest inc_time) per account with rows."""
        return await c.fetch(
            f"SELECT username, domain, COUNT(*), MIN(inc_time) FROM {self.table}"
            " GROUP BY username, domain ORDER BY username, domain")

    async def summary(self, c: Conn) -> tuple[int, int | None]:
        """(rows, inc_time of the first row by id or None)."""
        counted = await self.count(c)
        first = await c.fetch(f"SELECT inc_time FROM {self.table} ORDER BY id LIMIT 1")
        return counted, int(first[0][0]) if first else None


__all__ = ["COLS", "MessageOps", "list_filter", "to_message"]

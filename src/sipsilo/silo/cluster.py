"""Every SQL statement of the cluster (issue 16), in one place.

Instances of one deployment share a database (``[registrar] db_url`` for the
location table, ``[msilo] db_url`` for the silo). Three things cross instances
through it, and nothing else:

* **Heartbeats.** Each server process upserts one row of ``sipsilo_instances``
  every ``[cluster] heartbeat_interval`` seconds: its name (the instance id, with
  ``/wN`` for a worker), its hop URI (``[cluster] advertise``), when it started
  and when it was last seen. ``sipsilo cluster status`` lists the rows seen
  within ``stale_after`` seconds; nothing routes by them (a binding names the
  hop of its owner itself), so a stale row is harmless and is deleted when its
  process stops.
* **Counts for the status:** live bindings per process (the location table's
  ``instance`` column starts with the process name, then ``|``) and delivery
  claims per claim owner (the silo's ``claim_owner``).
* **Ordering across instances:** is one of this user's stored messages on its
  way (claimed by another process, or stored and not tried yet)? Then a live
  MESSAGE is stored behind them, as the local ``DeliveryEngine.busy`` check does
  within one process.

The statements are plain SQL with ``%s`` marks, valid on SQLite, MySQL/MariaDB
and PostgreSQL; the table names are checked identifiers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sipsilo.db.base import Conn, Pool, open_pool, run_txn
from sipsilo.db.errors import StoreUnavailable
from sipsilo.db.schema import check_identifier
from sipsilo.db.url import SqlDialect

INSTANCES_TABLE = "sipsilo_instances"
# registrar.sql_location.DEFAULT_TABLE (silo does not import registrar)
LOCATION_TABLE = "sipsilo_location"


def create_sql(dialect: SqlDialect) -> str:
    dbl = {"mysql": "DOUBLE", "postgresql": "DOUBLE PRECISION", "sqlite": "REAL"}[dialect]
    tail = " DEFAULT CHARSET=utf8mb4" if dialect == "mysql" else ""
    return (f"CREATE TABLE IF NOT EXISTS {INSTANCES_TABLE} (\n"
            "    name VARCHAR(128) PRIMARY KEY NOT NULL,\n"
            "    hop VARCHAR(255),\n"
            f"    started_at {dbl} NOT NULL,\n"
            f"    seen_at {dbl} NOT NULL,\n"
            "    version VARCHAR(32) NOT NULL\n"
            f"){tail}")


def _upsert_sql(dialect: SqlDialect) -> str:
    head = (f"INSERT INTO {INSTANCES_TABLE} (name, hop, started_at, seen_at, version)"
            " VALUES (%s, %s, %s, %s, %s)")
    if dialect == "mysql":
        return head + " ON DUPLICATE KEY UPDATE hop = VALUES(hop), seen_at = VALUES(seen_at)," \
                      " started_at = VALUES(started_at), version = VALUES(version)"
    return head + " ON CONFLICT (name) DO UPDATE SET hop = excluded.hop," \
                  " seen_at = excluded.seen_at, started_at = excluded.started_at," \
                  " version = excluded.version"


@dataclass(frozen=True)
class InstanceRow:
    name: str
    hop: str | None
    started_at: float
    seen_at: float
    version: str


class Heartbeat:
    """One process's heartbeat row (see the module doc)."""

    def __init__(self, pool: Pool, name: str, hop: str | None, version: str) -> None:
        self.pool = pool
        self.name = name[:128]
        self.hop = hop
        self.version = version[:32]
        self.started_at = time.time()
        self._sql = _upsert_sql(pool.dialect)

    async def open(self) -> None:
        sql = create_sql(self.pool.dialect)

        async def create(c: Conn) -> None:
            await c.lock(f"sipsilo_ddl_{INSTANCES_TABLE}")
            try:
                await c.execute(sql)
            finally:
                await c.unlock(f"sipsilo_ddl_{INSTANCES_TABLE}")

        await run_txn(self.pool, create, txn=False)
        await self.beat()

    async def beat(self, now: float | None = None) -> None:
        args = (self.name, self.hop, self.started_at, time.time() if now is None else now,
                self.version)
        await run_txn(self.pool, lambda c: c.execute(self._sql, args), txn=False)

    async def leave(self) -> None:
        """Stopped in order: the row goes (a killed process's row just goes stale)."""
        sql = f"DELETE FROM {INSTANCES_TABLE} WHERE name = %s"
        await run_txn(self.pool, lambda c: c.execute(sql, (self.name,)), txn=False)


async def live_instances(pool: Pool, now: float, stale_after: float) -> list[InstanceRow]:
    sql = (f"SELECT name, hop, started_at, seen_at, version FROM {INSTANCES_TABLE}"
           " WHERE seen_at >= %s ORDER BY name")
    rows = await run_txn(pool, lambda c: c.fetch(sql, (now - stale_after,)), txn=False)
    return [InstanceRow(str(r[0]), r[1], float(r[2]), float(r[3]), str(r[4])) for r in rows]


async def bindings_per_process(pool: Pool, location_table: str, now: float) -> dict[str, int]:
    """Live bindings by process name (the ``instance`` column up to "|")."""
    t = check_identifier(location_table)
    sql = f"SELECT instance, COUNT(*) FROM {t} WHERE expires_at > %s GROUP BY instance"
    rows = await run_txn(pool, lambda c: c.fetch(sql, (now,)), txn=False)
    out: dict[str, int] = {}
    for instance, count in rows:
        name = str(instance).split("|", 1)[0]
        out[name] = out.get(name, 0) + int(count)
    return out


async def claims_per_owner(pool: Pool, silo_table: str, now: int) -> dict[str, int]:
    t = check_identifier(silo_table)
    sql = (f"SELECT claim_owner, COUNT(*) FROM {t} WHERE claim_owner IS NOT NULL"
           " AND claim_until >= %s GROUP BY claim_owner")
    rows = await run_txn(pool, lambda c: c.fetch(sql, (int(now),)), txn=False)
    return {str(owner): int(count) for owner, count in rows}


def pending_elsewhere_sql(silo_table: str) -> str:
    """Arguments: username, domain, now, our claim owner, now. A row: one of the
    user's stored messages is on its way: claimed (unexpired) by another process,
    or stored and not tried yet (``attempts = 0``: a dump is about to take it).
    Rows tried and given back (a phone that refused them) do not count: they wait
    for the next REGISTER and must not turn every live MESSAGE into a stored one."""
    t = check_identifier(silo_table)
    return (f"SELECT id FROM {t} WHERE username = %s AND domain = %s AND snd_time = 0"
            " AND exp_time > %s AND (attempts = 0 OR (claim_owner IS NOT NULL"
            " AND claim_owner <> %s AND claim_until >= %s)) LIMIT 1")


def status_rows(instances: list[InstanceRow], bindings: dict[str, int],
                claims: dict[str, int], now: float) -> list[dict[str, Any]]:
    """What ``sipsilo cluster status`` shows, one dict per live process."""
    return [{"instance": row.name, "hop": row.hop or "", "version": row.version,
             "up_seconds": max(0, int(now - row.started_at)),
             "seen_seconds_ago": round(max(0.0, now - row.seen_at), 1),
             "bindings": bindings.get(row.name, 0), "claims": claims.get(row.name, 0)}
            for row in instances]


async def cluster_status(config: Any) -> list[dict[str, Any]]:
    """``sipsilo cluster status``: the live processes on ``[registrar] db_url``,
    their bindings, and their claims in the silo of ``[msilo] db_url``."""
    if config.registrar_db is None:
        raise ValueError("registrar.db_url is not set: bindings are in each server's "
                         "memory, there is no cluster to show")
    location = open_pool(config.registrar_db, 1, 2)
    silo = open_pool(config.msilo_db, 1, 2)
    now = time.time()
    try:
        try:
            await location.open()
            await silo.open()
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"registrar.db_url / msilo.db_url: {exc}") from None
        await run_txn(location, lambda c: c.execute(create_sql(location.dialect)), txn=False)
        live = await live_instances(location, now, config.cluster.stale_after)
        try:
            bindings = await bindings_per_process(location, LOCATION_TABLE, now)
        except Exception:  # no location table yet: no server ever ran on it
            bindings = {}
        try:
            claims = await claims_per_owner(silo, config.msilo.db_table, int(now))
        except Exception:
            claims = {}
    finally:
        await location.close()
        await silo.close()
    return status_rows(live, bindings, claims, now)

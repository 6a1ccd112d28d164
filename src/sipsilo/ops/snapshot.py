"""One process's figures for /metrics and its readiness, as plain JSON-able data.

A single server answers its own HTTP endpoint with them; with several worker
processes the supervisor asks every worker over the control channel
(commands ``metrics`` and ``ready``) and adds the answers up with :func:`merge`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from sipsilo.admin import silo as admin
from sipsilo.config import Config
from sipsilo.db.base import STATEMENTS
from sipsilo.metrics import merge_histograms

log = logging.getLogger("sipsilo.ops")

if TYPE_CHECKING:
    from sipsilo.app import Server

# How long /ready waits for the database before calling it unreachable.
READY_TIMEOUT = 2.0
# How long a scrape waits for the silo table's count.
TABLE_TIMEOUT = 5.0

# Figures every process reports alike (one database, one replicated location
# table): taken once, not added up, when several workers answer.
_SHARED = frozenset({"bindings", "silo_rows", "silo_oldest_seconds"})


async def table_metrics(config: Config) -> dict[str, Any]:
    """Rows waiting and the age of the oldest, read on a connection of their own in a
    thread (admin.silo, like the CLI): a scrape never waits in the store's queue nor
    holds up a store. Empty when the database does not answer in time."""
    try:
        summary = await asyncio.wait_for(asyncio.to_thread(admin.silo_summary, config),
                                         TABLE_TIMEOUT)
    except Exception as exc:
        log.warning("metrics: silo table not read: %s", exc or type(exc).__name__)
        return {}
    oldest = summary["oldest"]
    return {"silo_rows": summary["rows"],
            "silo_oldest_seconds": 0.0 if oldest is None else max(0.0, time.time() - oldest)}


async def process_metrics(server: Server, table: bool = True) -> dict[str, Any]:
    """The figures of this process (its share of them, with several workers);
    *table*: with the silo table's figures (the supervisor reads those once itself)."""
    now = time.time()
    stack = server.stack
    bindings: Counter[str] = Counter()
    for binding in await server.location.list(None, now):
        bindings[binding.flow.transport] += 1
    store = server.store
    pool = getattr(store, "pool", None)
    usage = pool.usage() if pool is not None else None
    connections = {"tcp": len(server.transports.tcp)}
    return {
        "counters": server.counters.snapshot(),
        "histograms": server.counters.histogram_snapshot(),
        "requests": dict(stack.requests_by_method),
        "responses_received": {f"{i}xx": n for i, n in enumerate(stack.responses_received)
                               if i},
        "responses_sent": {f"{i}xx": n for i, n in enumerate(stack.responses_sent) if i},
        "sip": dict(stack.counters),
        "transactions": stack.live_transactions,
        "deliveries": server.delivery.active,
        "bindings": dict(bindings),
        "connections": connections,
        **(await table_metrics(server.config) if table else {}),
        "db_pool": None if usage is None else {"open": usage[0], "in_use": usage[1],
                                                "max": usage[2]},
        "store": {"transactions": store.stats.transactions, "errors": store.stats.errors},
        "db_statements": STATEMENTS.n,
    }


async def process_ready(server: Server) -> dict[str, Any]:
    """{"ready": bool, "reason": str}: listeners bound and the database answering."""
    if not server.transports.bound():
        return {"ready": False, "reason": "no SIP listener is bound"}
    try:
        # A primary-key lookup: cheap on a large table, and it goes through the
        # same pool (or SQLite thread) as the stores.
        await asyncio.wait_for(server.store.get(0), READY_TIMEOUT)
    except TimeoutError:
        return {"ready": False,
                "reason": f"database did not answer within {READY_TIMEOUT:g} s"}
    except Exception as exc:
        return {"ready": False, "reason": f"database unavailable: {exc}"}
    return {"ready": True, "reason": "ok"}


def merge(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Several workers' :func:`process_metrics` as one server's."""
    out: dict[str, Any] = {}
    for reply in replies:
        for key, value in reply.items():
            if key == "histograms":
                continue
            if key not in out or key in _SHARED:
                out.setdefault(key, value)
            else:
                out[key] = _add(out[key], value)
    out["histograms"] = merge_histograms([r.get("histograms", {}) for r in replies])
    return out


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _add(a.get(k, 0), b.get(k, 0)) for k in {**a, **b}}
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a + b
    return a if b is None else b if a is None else a

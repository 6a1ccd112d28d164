"""Counters the server keeps and shows through `sipsilo stats` and `/metrics`.

msilo's own statistics keep Kamailio's names (`stored_messages`,
`dumped_messages`, `failed_messages`, `expired_messages`), counted the way
their names say: Kamailio 5.6 books every delivered message under
`dumped_reminders` instead.

Everything here is plain Python integers and lists, updated in place on the
request path (a dict increment, a bisect): the Prometheus exposition is built
only when someone scrapes (sipsilo.ops.prometheus), and with several worker
processes from every worker's :meth:`Counters.histogram_snapshot` added up.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Any

MSILO_COUNTERS = ("stored_messages", "dumped_messages", "failed_messages", "expired_messages",
                  # ours: MESSAGEs refused by a storage limit (silo.limits), and
                  # MESSAGEs stored already (re-sent) answered 202 without a new row
                  "refused_messages", "duplicate_messages")
# Outcomes of the "user is offline" notice (sent = handed to the transaction layer).
NOTICE_COUNTERS = ("notices_sent", "notices_failed")
# Push notifications (sipsilo.push): sent, failed (removed included), targets removed
# because the provider called the token dead.
PUSH_COUNTERS = ("push_sent", "push_failed", "push_removed",
                 # reminders (Kamailio's names): sent at their time, or kept for REGISTER
                 "dumped_reminders", "failed_reminders")

# Seconds from the route's store() call to the committed row (group commit included).
STORE_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                        1.0, 2.5, 5.0, 10.0)
# Seconds a delivered message waited in the silo: seconds to days (expire_time is 72 h).
SILO_WAIT_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0, 86400.0,
                     259200.0, 604800.0)
HISTOGRAMS = {"store_commit_seconds": STORE_COMMIT_BUCKETS,
              "silo_wait_seconds": SILO_WAIT_BUCKETS}


class Histogram:
    """Fixed buckets, non-cumulative counts (the last one is +Inf), and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, Prometheus' "le" (less or equal).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum}


class Counters:
    def __init__(self) -> None:
        self._values: Counter[str] = Counter(
            {name: 0 for name in (*MSILO_COUNTERS, *NOTICE_COUNTERS, *PUSH_COUNTERS)})
        self.histograms = {name: Histogram(bounds) for name, bounds in HISTOGRAMS.items()}

    def inc(self, name: str, by: int = 1) -> None:
        self._values[name] += by

    def get(self, name: str) -> int:
        return self._values[name]

    def observe(self, name: str, value: float) -> None:
        self.histograms[name].observe(value)

    def snapshot(self) -> dict[str, int]:
        return dict(self._values)

    def histogram_snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: h.snapshot() for name, h in self.histograms.items()}


def merge_histograms(snapshots: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Several processes' histogram snapshots as one (same buckets: counts and sums added)."""
    out: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        for name, h in snap.items():
            mine = out.get(name)
            if mine is None or mine["bounds"] != h["bounds"]:
                out[name] = {"bounds": list(h["bounds"]), "counts": list(h["counts"]),
                             "sum": h["sum"]}
                continue
            mine["counts"] = [a + b for a, b in zip(mine["counts"], h["counts"], strict=True)]
            mine["sum"] += h["sum"]
    return out

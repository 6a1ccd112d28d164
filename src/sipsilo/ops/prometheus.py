"""The Prometheus text exposition of a metrics snapshot (sipsilo.ops.snapshot).

prometheus-client writes the text; the values come from one snapshot taken at
scrape time (one process's, or every worker's added up by the supervisor), so
nothing here runs per SIP message. Names follow the Prometheus conventions:
``sipsilo_`` prefix, ``_total`` on counters, base units (seconds).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sipsilo import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_MSILO = {
    "stored_messages": "MESSAGEs stored for offline users (answered 202 after the commit)",
    "dumped_messages": "stored messages delivered (the phone answered 2xx)",
    "failed_messages": "delivery attempts of stored messages that failed",
    "expired_messages": "stored messages purged unsent because they expired",
    "notices_sent": "'user is offline' notices sent to senders",
    "notices_failed": "'user is offline' notices that could not be sent",
    "push_sent": "push notifications the provider accepted",
    "push_failed": "push notifications that failed (timeouts and dead tokens included)",
    "push_removed": "push targets removed because the provider called the token dead",
    "dumped_reminders": "reminders delivered at their send time",
    "failed_reminders": "reminders not delivered at their time (kept for the next REGISTER)",
}
_HISTOGRAMS = {
    "store_commit_seconds": "time from storing a MESSAGE to its committed row",
    "silo_wait_seconds": "time a delivered message waited in the silo",
}


class _Snapshot(Collector):
    def __init__(self, snap: dict[str, Any]) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        info = GaugeMetricFamily("sipsilo_build_info", "sipsilo version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        workers = GaugeMetricFamily("sipsilo_workers", "processes handling SIP")
        workers.add_metric([], s.get("workers", 1))
        yield workers
        counters = s.get("counters", {})
        for name, text in _MSILO.items():
            yield CounterMetricFamily(f"sipsilo_{name}", text, value=counters.get(name, 0))
        requests = CounterMetricFamily("sipsilo_sip_requests", "SIP requests received",
                                       labels=["method"])
        for method, n in sorted(s.get("requests", {}).items()):
            requests.add_metric([method], n)
        yield requests
        responses = CounterMetricFamily(
            "sipsilo_sip_responses", "SIP responses by direction and status class",
            labels=["direction", "class"])
        for direction in ("received", "sent"):
            for cls, n in sorted(s.get(f"responses_{direction}", {}).items()):
                responses.add_metric([direction, cls], n)
        yield responses
        sip = s.get("sip", {})
        yield CounterMetricFamily("sipsilo_sip_parse_errors", "unparsable SIP messages",
                                  value=sip.get("rx_errors", 0))
        yield CounterMetricFamily("sipsilo_sip_retransmissions",
                                  "retransmitted requests absorbed",
                                  value=sip.get("retransmissions", 0))
        yield GaugeMetricFamily("sipsilo_transactions", "SIP transactions in flight",
                                value=s.get("transactions", 0))
        yield GaugeMetricFamily("sipsilo_active_deliveries", "deliveries of stored messages "
                                "running now", value=s.get("deliveries", 0))
        yield _by("sipsilo_bindings", "registered contacts by transport", "transport",
                  s.get("bindings", {}))
        yield _by("sipsilo_connections", "open stream connections by transport", "transport",
                  s.get("connections", {}))
        if "silo_rows" in s:  # absent when the database did not answer in time
            yield GaugeMetricFamily("sipsilo_silo_messages", "stored messages waiting",
                                    value=s["silo_rows"])
            yield GaugeMetricFamily("sipsilo_silo_oldest_message_age_seconds",
                                    "age of the oldest stored message (0: none)",
                                    value=s["silo_oldest_seconds"])
        for name, text in _HISTOGRAMS.items():
            h = s.get("histograms", {}).get(name)
            if h is not None:
                yield _histogram(f"sipsilo_{name}", text, h)
        store = s.get("store", {})
        yield CounterMetricFamily("sipsilo_store_transactions", "write transactions committed "
                                  "by the message store", value=store.get("transactions", 0))
        yield CounterMetricFamily("sipsilo_store_errors", "message store operations that "
                                  "failed", value=store.get("errors", 0))
        if "db_statements" in s:
            yield CounterMetricFamily("sipsilo_db_statements", "statements sent to a server "
                                      "database (PostgreSQL, MySQL/MariaDB), every pool",
                                      value=s["db_statements"])
        pool = s.get("db_pool")
        if pool:
            yield _by("sipsilo_db_pool_connections", "message store pool connections",
                      "state", {"open": pool["open"], "in_use": pool["in_use"]})
            yield GaugeMetricFamily("sipsilo_db_pool_max_connections",
                                    "message store pool size limit", value=pool["max"])
        if "dropped_datagrams" in s:
            yield CounterMetricFamily("sipsilo_dropped_datagrams", "datagrams dropped because "
                                      "a worker fell behind", value=s["dropped_datagrams"])


def _by(name: str, text: str, label: str, values: dict[str, Any]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def _histogram(name: str, text: str, h: dict[str, Any]) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip([*h["bounds"], float("inf")], h["counts"], strict=True):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=h["sum"])


def exposition(snap: dict[str, Any]) -> bytes:
    """The text a scrape gets."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snap))
    return generate_latest(registry)

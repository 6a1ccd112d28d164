"""The bench's log parsers and report helpers (bench/sipbench): pure functions, no SIPp."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from sipbench import dbtools, report
from sipbench.sippstats import (
    DumpStats,
    dump_stats,
    parse_seq_log,
    parse_shortmsg,
    percentile,
    uac_stats,
)


def line(ts: float, d: str, cid: str, first: str, cseq: str = "1 MESSAGE") -> str:
    return f"2025-01-01\t12:00:00.000000\t{ts:.6f}\t{d}\t{cid}\t{cseq}\t{first}\n"


MSG = "MESSAGE sip:u1@127.0.0.1 SIP/2.0"


def test_shortmsg_skips_partial_and_garbage_lines() -> None:
    lines = [line(1.0, "S", "a", MSG), "2025-01-01\t12:00\tnot-a-number\tS\ta\t1\tX\n", "trunc\t"]
    msgs = list(parse_shortmsg(lines))
    assert len(msgs) == 1
    assert msgs[0].call_id == "a" and msgs[0].status is None
    assert next(parse_shortmsg([line(2.0, "R", "a", "SIP/2.0 202 Accepted")])).status == 202


def test_uac_stats_counts_codes_retransmissions_and_latency() -> None:
    lines = [
        line(10.000, "S", "a", MSG),
        line(10.001, "R", "a", "SIP/2.0 100 Trying"),
        line(10.002, "R", "a", "SIP/2.0 202 Accepted"),
        line(10.010, "S", "b", MSG),
        line(10.510, "S", "b", MSG),  # retransmission
        line(10.520, "R", "b", "SIP/2.0 503 Service Unavailable"),
        line(10.020, "S", "c", MSG),  # never answered
        line(10.030, "R", "old", "SIP/2.0 202 Accepted"),  # late reply to an earlier run
    ]
    st = uac_stats(parse_shortmsg(lines), 202)
    assert (st.sent, st.ok, st.other, st.noreply, st.retrans, st.stray) == (3, 1, 1, 1, 1, 1)
    assert st.codes == {202: 1, 503: 1}
    assert math.isclose(st.p50_ms, 2.0, abs_tol=1e-6)
    assert math.isclose(st.duration_s, 0.52, abs_tol=1e-6)


def test_uac_stats_of_nothing() -> None:
    st = uac_stats([], 202)
    assert st.sent == 0 and st.rate == 0.0 and math.isnan(st.p99_ms)


def test_percentile_nearest_rank() -> None:
    vals = [float(v) for v in range(1, 101)]
    assert percentile(vals, 50) == 51.0  # round(0.5 * 99) = 50 (banker's), index 50
    assert percentile(vals, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_seq_log() -> None:
    seq = parse_seq_log(["c1\t1\n", "c2\t2\n", "c1\t9\n", "c3\t\n", "junk\n"])
    assert seq == {"c1": 1, "c2": 2}


def _dump(order: list[tuple[str, float]], seq: dict[str, int], n: int) -> DumpStats:
    reg = list(parse_shortmsg([line(100.0, "S", "r", "REGISTER sip:127.0.0.1 SIP/2.0")]))
    ua = list(parse_shortmsg([line(ts, "R", cid, MSG) for cid, ts in order]))
    return dump_stats(reg, ua, seq, n)


def test_dump_in_order_with_a_retransmission() -> None:
    st = _dump(
        [("a", 100.1), ("b", 100.2), ("b", 100.7), ("c", 100.3)], {"a": 1, "b": 2, "c": 3}, 3
    )
    assert (st.received, st.distinct, st.retrans) == (4, 3, 1)
    assert st.in_order and st.complete and st.inversions == 0
    assert math.isclose(st.last_s, 0.3, abs_tol=1e-6)  # first copy of the last message


def test_dump_out_of_order_and_missing() -> None:
    st = _dump([("b", 100.1), ("a", 100.2)], {"a": 1, "b": 2}, 3)
    assert not st.in_order and st.inversions == 1 and st.missing == 1 and not st.complete


def test_sqlite_path(tmp_path: Path) -> None:
    assert dbtools.sqlite_path(None, tmp_path) == tmp_path / "sipsilo.db"
    assert dbtools.sqlite_path("sqlite:///x/y.db?busy_timeout=5", tmp_path) == tmp_path / "x/y.db"
    assert dbtools.sqlite_path("sqlite:////abs/y.db", tmp_path) == Path("/abs/y.db")
    assert dbtools.sqlite_path("mysql://u:p@127.0.0.1/k", tmp_path) is None


def test_report_targets_and_markdown() -> None:
    res = {
        "meta": {
            "date": "d",
            "command": "c",
            "host": "h",
            "versions": "v",
            "db_url": "u",
            "netns": "n",
            "git": "g",
        },
        "store": {
            "notify_on": {
                "rate_msgs_per_s": 500,
                "p50_ms": 1.0,
                "p99_ms": 30.0,
                "codes": {"202": 20000},
                "loadavg": [1.0, 0.5, 0.2],
                "peak_rss_mb": 80.0,
                "server_cpu_us_per_msg": 321,
            }
        },
        "dump": {
            "n": 1000,
            "dump_time_s": 0.4,
            "in_order": True,
            "retrans": 0,
            "retrans_pct": 0.0,
            "rows_left": 0,
            "peak_rss_mb": 90.0,
        },
        "ceiling": {"rate_msgs_per_s": 2000},
    }
    met = {name: ok for name, _, ok in report.targets(res)}
    assert met["store: p99 < 20 ms"] is False
    assert met["store: ≥ 50% of the SIPp↔SIPp ceiling"] is False
    assert met["dump of 1000: < 0.5 s"] is True
    assert met["server peak RSS < 150 MB"] is True
    md = report.markdown(res)
    assert "**500 msg/s**" in md and "**0.400 s**" in md
    assert "server CPU 321 µs/msg" in md

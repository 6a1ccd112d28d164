"""Figures from SIPp logs.  Pure functions: no processes, no clocks.

SIPp's ``-trace_shortmsg`` log has one line per SIP message sent or received:
``date TAB time TAB epoch TAB S|R TAB Call-ID TAB CSeq TAB first line``.  The
epoch has microseconds, so latencies come from these timestamps rather than
from SIPp's own (millisecond, per-interval) statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path


@dataclass(frozen=True)
class ShortMsg:
    ts: float
    direction: str  # "S" sent by this SIPp, "R" received
    call_id: str
    cseq: str
    first_line: str

    @property
    def is_response(self) -> bool:
        return self.first_line.startswith("SIP/2.0")

    @property
    def status(self) -> int | None:
        if not self.is_response:
            return None
        try:
            return int(self.first_line.split()[1])
        except (IndexError, ValueError):
            return None


def parse_shortmsg(lines: Iterable[str]) -> Iterator[ShortMsg]:
    """Skip what is not a complete line: SIPp may be killed mid-write."""
    for line in lines:
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) < 7:
            continue
        try:
            ts = float(parts[2])
        except ValueError:
            continue
        yield ShortMsg(ts, parts[3], parts[4], parts[5], parts[6])


def read_shortmsg(path: Path) -> list[ShortMsg]:
    if not path.exists():
        return []
    # latin-1: never fails on bytes, and SIP start lines are ASCII anyway.
    with path.open(encoding="latin-1") as f:
        return list(parse_shortmsg(f))


def percentile(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile (the kit's method, so figures stay comparable)."""
    if not sorted_vals:
        return math.nan
    k = round(p / 100.0 * (len(sorted_vals) - 1))
    return sorted_vals[min(len(sorted_vals) - 1, max(0, k))]


@dataclass
class UacStats:
    """One SIPp client run: each call is one request and its final reply."""

    sent: int = 0
    ok: int = 0
    other: int = 0
    noreply: int = 0
    retrans: int = 0
    duration_s: float = math.nan
    rate: float = 0.0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    codes: dict[int, int] = field(default_factory=dict)
    stray: int = 0  # final replies to Call-IDs this run never sent


def uac_stats(msgs: Iterable[ShortMsg], expected: int) -> UacStats:
    first_send: dict[str, float] = {}
    first_line: dict[str, str] = {}
    sends = 0
    stray = 0
    final: dict[str, tuple[float, int]] = {}
    for m in msgs:
        if m.direction == "S" and not m.is_response:
            if m.call_id not in first_send:
                first_send[m.call_id] = m.ts
                first_line[m.call_id] = m.first_line
                sends += 1
            elif m.first_line == first_line[m.call_id]:
                sends += 1  # same request again: a retransmission
        elif m.direction == "R":
            code = m.status
            if code is None or code < 200:
                continue
            if m.call_id not in first_send:
                # A late reply to the previous run on the same port: not ours to count.
                stray += 1
            elif m.call_id not in final:
                final[m.call_id] = (m.ts, code)
    st = UacStats(sent=len(first_send), retrans=sends - len(first_send), stray=stray)
    for _, code in final.values():
        st.codes[code] = st.codes.get(code, 0) + 1
    ok_ids = [c for c, (_, code) in final.items() if code == expected]
    st.ok = len(ok_ids)
    st.other = len(final) - st.ok
    st.noreply = len(first_send) - len(final)
    lats = sorted((final[c][0] - first_send[c]) * 1000.0 for c in ok_ids if c in first_send)
    if first_send and final:
        # First send to last final reply: the rate the server actually sustained.
        st.duration_s = max(max(t for t, _ in final.values()) - min(first_send.values()), 1e-9)
        st.rate = st.ok / st.duration_s
    if lats:
        st.p50_ms = percentile(lats, 50)
        st.p90_ms = percentile(lats, 90)
        st.p99_ms = percentile(lats, 99)
        st.max_ms = lats[-1]
    return st


def parse_seq_log(lines: Iterable[str]) -> dict[str, int]:
    """The UA's ``<log>`` lines, ``Call-ID TAB seq``: which message each call carried."""
    seq: dict[str, int] = {}
    for line in lines:
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 2 or not parts[1].strip().isdigit():
            continue
        seq.setdefault(parts[0].strip(), int(parts[1]))
    return seq


@dataclass
class DumpStats:
    """Delivery at REGISTER, seen from the user's UA."""

    expected: int
    received: int = 0  # MESSAGEs received, retransmissions included
    distinct: int = 0  # distinct Call-IDs
    retrans: int = 0  # received - distinct
    first_s: float = math.nan  # REGISTER sent -> first MESSAGE received
    last_s: float = math.nan  # REGISTER sent -> last distinct MESSAGE received
    in_order: bool = False  # every seq arrived, in ascending order
    inversions: int = 0  # adjacent first-arrivals whose seq went down
    missing: int = 0  # seqs 1..expected never received
    unknown_seq: int = 0  # calls whose body had no seq (not ours, or mangled)

    @property
    def complete(self) -> bool:
        return self.distinct >= self.expected and self.missing == 0


def dump_stats(
    register: Iterable[ShortMsg], ua: Iterable[ShortMsg], seq_by_call: dict[str, int], expected: int
) -> DumpStats:
    st = DumpStats(expected=expected)
    t0 = next(
        (m.ts for m in register if m.direction == "S" and m.first_line.startswith("REGISTER")), None
    )
    first_rx: dict[str, float] = {}
    for m in ua:
        if m.direction == "R" and m.first_line.startswith("MESSAGE"):
            st.received += 1
            first_rx.setdefault(m.call_id, m.ts)
    st.distinct = len(first_rx)
    st.retrans = st.received - st.distinct
    if t0 is not None and first_rx:
        st.first_s = min(first_rx.values()) - t0
        st.last_s = max(first_rx.values()) - t0
    # Order is judged by arrival time of each message's first copy, not by the log
    # order, so a late flush of SIPp's log file cannot fake an inversion.
    arrival = sorted(first_rx.items(), key=lambda kv: kv[1])
    seqs = [seq_by_call[c] for c, _ in arrival if c in seq_by_call]
    st.unknown_seq = len(arrival) - len(seqs)
    st.inversions = sum(1 for a, b in pairwise(seqs) if b < a)
    st.missing = len(set(range(1, expected + 1)) - set(seqs))
    st.in_order = st.missing == 0 and st.inversions == 0 and st.unknown_seq == 0
    return st

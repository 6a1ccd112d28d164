"""results.json -> results.md: one table of figures and one of the performance targets."""

from __future__ import annotations

from typing import Any


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _load(r: dict[str, Any]) -> str:
    la = r.get("loadavg") or []
    return " ".join(f"{x:.2f}" for x in la) if la else "–"


def _rss(r: dict[str, Any]) -> str:
    return _f(r.get("peak_rss_mb"), "{:.0f}")


def _store_row(name: str, r: dict[str, Any]) -> str:
    lat = f"{_f(r.get('p50_ms'))} / {_f(r.get('p99_ms'))}"
    codes = ", ".join(f"{k}×{v}" for k, v in (r.get("codes") or {}).items()) or "–"
    note = f"offered {r.get('offered_msgs_per_s')}/s, best step {r.get('best_step')}/s, {codes}"
    if r.get("server_cpu_us_per_msg") is not None:
        note += f", server CPU {r['server_cpu_us_per_msg']} µs/msg"
    if not r.get("rate_msgs_per_s") and r.get("confirm"):
        # No run passed: say how the last confirmation run failed, it is the useful part.
        c = r["confirm"][-1]
        note += (
            f"; last confirmation at {c['offered']}/s x {c['n']}: achieved {c['rate']:.0f}/s,"
            f" {c['retrans']} retransmissions, {c['other']} errors,"
            f" p50/p99 {_f(c['p50_ms'])}/{_f(c['p99_ms'])} ms"
        )
    return (
        f"| {name} | **{r.get('rate_msgs_per_s', 0)} msg/s** | {lat} | {note} |"
        f" {_load(r)} | {_rss(r)} |"
    )


def _dump_row(name: str, r: dict[str, Any]) -> str:
    if r.get("error"):
        return f"| {name} | failed | – | {r['error']} | {_load(r)} | {_rss(r)} |"
    t = r.get("dump_time_s")
    head = f"**{t:.3f} s**" if t is not None else f"incomplete ({r.get('distinct')}/{r.get('n')})"
    note = (
        f"n={r.get('n')}, in order: {'yes' if r.get('in_order') else 'NO'}"
        f" ({r.get('inversions')} inversions), retransmissions {r.get('retrans')}"
        f" ({r.get('retrans_pct')}%), rows left {r.get('rows_left')}"
    )
    return f"| {name} | {head} | – | {note} | {_load(r)} | {_rss(r)} |"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def targets(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met?) for what this harness can judge on its own.
    "2x Kamailio" needs the kit's compare.sh and is not judged here."""
    out: list[tuple[str, str, bool | None]] = []
    st = res.get("store", {}).get("notify_on")
    if st:
        errs = sum(v for k, v in (st.get("codes") or {}).items() if k != "202")
        ok_rate = st.get("rate_msgs_per_s", 0) > 0
        out.append(
            (
                "store: a confirmed run with zero non-202 replies and no retransmission",
                f"{errs} errors" if ok_rate else "no run passed",
                ok_rate and errs == 0,
            )
        )
        p99 = st.get("p99_ms")
        p99_txt = _f(p99) + " ms" if p99 is not None else "no run passed"
        out.append(("store: p99 < 20 ms", p99_txt, p99 is not None and p99 < 20))
        ceil = res.get("ceiling")
        if ceil:
            r = _ratio(st.get("rate_msgs_per_s"), ceil.get("rate_msgs_per_s"))
            out.append(
                (
                    "store: ≥ 50% of the SIPp↔SIPp ceiling",
                    _f(r and 100 * r, "{:.0f}%"),
                    r is not None and r >= 0.5,
                )
            )
    d = res.get("dump")
    if d:
        t = d.get("dump_time_s")
        out.append((f"dump of {d.get('n')}: < 0.5 s", _f(t, "{:.3f} s"), t is not None and t < 0.5))
        out.append(
            ("dump: in order", "yes" if d.get("in_order") else "no", bool(d.get("in_order")))
        )
        pct = d.get("retrans_pct")
        out.append(("dump: < 1% retransmissions", _f(pct, "{:.2f}%"), pct is not None and pct < 1))
    sc = res.get("scale") or {}
    for key, label in (("store_ratio", "store rate"), ("dump_ratio", "dump time")):
        r = sc.get(key)
        if key in sc:
            out.append(
                (
                    f"scale: {label} within 10% of the empty silo",
                    _f(r, "×{:.2f}"),
                    r is not None and 0.9 <= r <= 1.1,
                )
            )
    rss = [v for v in _all_rss(res) if v is not None]
    if rss:
        out.append(("server peak RSS < 150 MB", f"{max(rss):.0f} MB", max(rss) < 150))
    return out


def _all_rss(res: dict[str, Any]) -> list[float | None]:
    found: list[float | None] = []
    for r in (*res.get("store", {}).values(), res.get("dump"), *(res.get("scale") or {}).values()):
        if isinstance(r, dict) and "peak_rss_mb" in r:
            found.append(r["peak_rss_mb"])
    return found


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = [
        f"# sipsilo bench — {m['date']}",
        "",
        f"`{m['command']}`  ",
        f"host: {m['host']}; {m['versions']}; db: `{m['db_url']}`; {m['netns']}  ",
        f"git: {m['git']}",
        "",
        "| measurement | result | p50 / p99 ms | details | load avg (1/5/15 min) | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, name in (
        ("notify_on", "store, offline notice on"),
        ("notify_off", "store, offline notice off"),
    ):
        if key in res.get("store", {}):
            lines.append(_store_row(name, res["store"][key]))
    if res.get("dump"):
        lines.append(_dump_row("dump at REGISTER", res["dump"]))
    sc = res.get("scale") or {}
    rows = sc.get("rows")
    if "store" in sc:
        lines.append(_store_row(f"store, {rows:,} rows preloaded", sc["store"]))
    if "dump" in sc:
        lines.append(_dump_row(f"dump, {rows:,} rows preloaded", sc["dump"]))
    if res.get("ceiling"):
        lines.append(_store_row("SIPp↔SIPp ceiling (no server)", res["ceiling"]))
    if sc:
        lines += [
            "",
            f"Scale: preload of {rows:,} rows took {_f(sc.get('preload_s'))} s;"
            f" store rate full/empty ×{_f(sc.get('store_ratio'))},"
            f" dump time full/empty ×{_f(sc.get('dump_ratio'))}.",
        ]
    lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
    for name, val, ok in targets(res):
        lines.append(f"| {name} | {val} | {'yes' if ok else 'no' if ok is not None else '?'} |")
    lines += [
        "",
        "Load average is read at the start of each run: figures taken while other work "
        "ran on this machine are lower than the server can do.",
        "",
    ]
    return "\n".join(lines)

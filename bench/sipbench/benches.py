"""The measurements: store-rate ladder, dump at REGISTER.  Each takes a server that
is already listening and returns a plain dict for results.json."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import procs, sipp
from .sippstats import dump_stats, parse_seq_log, read_shortmsg, uac_stats

# The kit's ladder, so that "highest passing step" means the same thing in both.
LADDER = (
    50,
    100,
    250,
    500,
    750,
    1000,
    1250,
    1500,
    1750,
    2000,
    2500,
    3000,
    3500,
    4000,
    5000,
    6000,
    7000,
    8000,
    10000,
    12000,
    15000,
    20000,
    25000,
    30000,
)


@dataclass(frozen=True)
class StoreParams:
    n: int = 20000  # messages in the confirmation run
    step_seconds: float = 4.0  # each ladder step lasts about this long ...
    min_step: int = 500  # ... with at least this many messages
    confirm_tries: int = 3  # confirmation runs, each at 80% of the previous rate


def _clean(v: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 3)
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    return v


def _run_id() -> str:
    return f"{int(time.time())}{os.getpid()}"


def store_step(
    target_port: int,
    ports: sipp.Ports,
    out: Path,
    tag: str,
    count: int,
    rate: int,
    keep_log: bool = False,
    cpu: Callable[[], float | None] = lambda: None,
) -> dict[str, Any]:
    """One run at a fixed offered rate, judged by the kit's pass criteria.

    *cpu* reads the server's CPU seconds so far (all its processes): the run's
    share per message is a cost figure that, unlike the ladder, is not coarser
    than the differences it should show (empty silo vs 1,000,000 rows).
    """
    short = out / f"{tag}.short.log"
    # A failed step leaves the server working off a backlog; let it finish, so the
    # next run neither pays for it nor sees its late replies.
    time.sleep(2.0)
    load = [round(x, 2) for x in procs.loadavg()]
    cpu0 = cpu()
    rc = sipp.run_uac(
        "store_distinct",
        target_port,
        ports.uac,
        count,
        rate,
        short,
        out / f"{tag}.sipp.log",
        "-key",
        "user_prefix",
        f"st{_run_id()}{tag}u",
        "-key",
        "from_user",
        "alice",
        "-key",
        "contact_port",
        str(ports.sink),
    )
    cpu1 = cpu()
    st = uac_stats(read_shortmsg(short), 202)
    passed = (
        rc == 0 and st.ok == count and st.other == 0 and st.retrans == 0 and st.rate >= 0.95 * rate
    )
    if passed and not keep_log:
        short.unlink(missing_ok=True)  # about 1 MB per 4,000 messages; failures are kept
    res = {
        "tag": tag,
        "offered": rate,
        "n": count,
        "sipp_rc": rc,
        "pass": passed,
        "loadavg": load,
        "server_cpu_us_per_msg": (
            round((cpu1 - cpu0) / count * 1e6) if cpu0 is not None and cpu1 is not None else None
        ),
        **asdict(st),
    }
    cleaned: dict[str, Any] = _clean(res)
    return cleaned


def store_ladder(
    target_port: int,
    ports: sipp.Ports,
    out: Path,
    p: StoreParams,
    log: Callable[[str], None],
    alive: Callable[[], bool] = lambda: True,
    cpu: Callable[[], float | None] = lambda: None,
) -> dict[str, Any]:
    """Climb the ladder until a step fails, then confirm the best step with p.n messages."""
    out.mkdir(parents=True, exist_ok=True)
    sink = sipp.start_uas("notice_sink", ports.sink, target_port, 3600, out / "sink.log")
    steps: list[dict[str, Any]] = []
    confirms: list[dict[str, Any]] = []
    final: dict[str, Any] | None = None
    try:
        best = 0
        for rate in LADDER:
            count = max(p.min_step, int(rate * p.step_seconds))
            step = store_step(target_port, ports, out, f"r{rate}", count, rate, cpu=cpu)
            steps.append(step)
            log(f"  step {rate:>5}/s: {_brief(step)}")
            if not step["pass"] or not alive():
                break
            best = rate
        cand = best
        for i in range(1, p.confirm_tries + 1):
            if cand <= 0 or not alive():
                break
            run = store_step(target_port, ports, out, f"confirm{i}", p.n, cand, keep_log=True,
                             cpu=cpu)
            confirms.append(run)
            log(f"  confirm {cand:>5}/s x {p.n}: {_brief(run)}")
            if run["pass"]:
                final = run
                break
            cand = cand * 8 // 10
    finally:
        procs.stop(sink)
    return {
        "rate_msgs_per_s": round(final["rate"]) if final else 0,
        "offered_msgs_per_s": final["offered"] if final else 0,
        "best_step": max((s["offered"] for s in steps if s["pass"]), default=0),
        "p50_ms": final["p50_ms"] if final else None,
        "p99_ms": final["p99_ms"] if final else None,
        "max_ms": final["max_ms"] if final else None,
        "server_cpu_us_per_msg": final["server_cpu_us_per_msg"] if final else None,
        "codes": final["codes"] if final else {},
        "loadavg": final["loadavg"] if final else (steps[0]["loadavg"] if steps else []),
        "steps": steps,
        "confirm": confirms,
    }


def _brief(r: dict[str, Any]) -> str:
    return (
        f"{'PASS' if r['pass'] else 'fail'} achieved {r['rate']:.0f}/s ok {r['ok']}/{r['n']}"
        f" other {r['other']} retrans {r['retrans']} p50/p99 {r['p50_ms']}/{r['p99_ms']} ms"
        f" codes {r['codes']} rc {r['sipp_rc']}"
        + (f" server CPU {r['server_cpu_us_per_msg']} us/msg"
           if r.get("server_cpu_us_per_msg") is not None else "")
    )


def dump(
    target_port: int,
    ports: sipp.Ports,
    out: Path,
    n: int,
    queue_rate: int,
    rows_left: Callable[[str], int | None],
    log: Callable[[str], None],
    settle_s: float = 3.0,
    wait_s: float = 60.0,
) -> dict[str, Any]:
    """Queue n messages for one user, REGISTER it, time the delivery at its UA."""
    out.mkdir(parents=True, exist_ok=True)
    user = f"dump{_run_id()}"
    load = [round(x, 2) for x in procs.loadavg()]
    res: dict[str, Any] = {"n": n, "queue_rate": queue_rate, "user": user, "loadavg": load}
    sink = sipp.start_uas(
        "notice_sink", ports.sink, target_port, int(n / queue_rate) + 300, out / "sink.log"
    )
    ua = None
    try:
        qrc = sipp.run_uac(
            "queue_single",
            target_port,
            ports.uac,
            n,
            queue_rate,
            out / "queue.short.log",
            out / "queue.sipp.log",
            "-key",
            "touser",
            user,
            "-key",
            "from_user",
            "alice",
            "-key",
            "contact_port",
            str(ports.sink),
        )
        q = uac_stats(read_shortmsg(out / "queue.short.log"), 202)
        res["queue"] = _clean({"sipp_rc": qrc, **asdict(q)})
        log(f"  queued {q.ok}/{n} (202), codes {q.codes}, p99 {q.p99_ms:.2f} ms")
        if q.ok != n:
            res["error"] = f"only {q.ok} of {n} queued messages got 202"
            return res
        res["rows_before"] = rows_left(user)
        time.sleep(1.0)
        ua_short, ua_seq = out / "ua.short.log", out / "ua.seq.log"
        ua = sipp.start_uas(
            "user_agent",
            ports.ua,
            target_port,
            int(wait_s) + 60,
            out / "ua.sipp.log",
            "-trace_shortmsg",
            "-shortmessage_file",
            str(ua_short),
            "-trace_logs",
            "-log_file",
            str(ua_seq),
        )
        rrc = sipp.run_uac(
            "register",
            target_port,
            ports.register,
            1,
            1,
            out / "register.short.log",
            out / "register.sipp.log",
            "-s",
            user,
            "-key",
            "contact_port",
            str(ports.ua),
            "-key",
            "expires",
            "3600",
        )
        res["register_rc"] = rrc

        def delivered() -> bool:
            rx = {
                m.call_id
                for m in read_shortmsg(ua_short)
                if m.direction == "R" and m.first_line.startswith("MESSAGE")
            }
            return len(rx) >= n

        procs.wait_until(delivered, wait_s, step=0.2)
        # Give the last 200s time to reach the server, and the server time to delete
        # what was confirmed, before the rows are counted; the UA keeps answering.
        time.sleep(settle_s)
        res["rows_left"] = rows_left(user)
    finally:
        procs.stop(ua)
        procs.stop(sink)
    st = dump_stats(
        read_shortmsg(out / "register.short.log"),
        read_shortmsg(out / "ua.short.log"),
        parse_seq_log(_lines(out / "ua.seq.log")),
        n,
    )
    res.update(_clean(asdict(st)))
    res["complete"] = st.complete
    res["dump_time_s"] = res["last_s"] if st.complete else None
    res["retrans_pct"] = round(100.0 * st.retrans / max(st.distinct, 1), 2)
    log(
        f"  dump: {st.distinct}/{n} distinct in {st.last_s:.3f} s, copies {st.received},"
        f" in order {st.in_order}, rows left {res['rows_left']}"
    )
    return res


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="latin-1").splitlines() if path.exists() else []

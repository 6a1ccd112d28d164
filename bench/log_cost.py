#!/usr/bin/env python3
"""What logging at info costs: server CPU per stored message at log_level info
against warning, in one run, at a fixed bounded load.

    python bench/log_cost.py [--count 10000] [--rate 1000] [--rounds 2] [--port P]
                             [--src NAME=DIR ...]

Each round starts a fresh server per level (info first, then warning), sends
--count MESSAGEs to distinct offline users at --rate with SIPp (every one is
stored, one 202 each; the offline notice is off) and reads the server's
user + system CPU seconds from /proc before and after. CPU per message, not
throughput, is the figure: it holds on a machine shared with other work,
where wall-clock rates do not. The server under test is whatever ``python -m
sipsilo`` imports; ``--src main=/path/to/main/src --src new=src`` compares
checkouts, their runs interleaved so that a change in the machine's other load
falls on both alike. Prints one line per run and a summary per checkout: the
median per level and info's extra cost in percent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sipbench import procs, sipp  # noqa: E402
from sipbench.server import RunningServer, ServerSpec  # noqa: E402
from sipbench.sippstats import read_shortmsg, uac_stats  # noqa: E402


def one_run(level: str, args: argparse.Namespace, out: Path, tag: str) -> dict[str, float]:
    spec = ServerSpec(port=args.port, extra_sets=(f"server.log_level={level}",))
    log = out / f"{tag}.server.log"
    with RunningServer(spec, out / f"{tag}.data", log, notify=False) as server:
        cpu0 = server.cpu_seconds() or 0.0
        short = out / f"{tag}.short.log"
        rc = sipp.run_uac("store_distinct", args.port, args.uac_port, args.count, args.rate,
                          short, out / f"{tag}.sipp.log", "-key", "user_prefix", f"{tag}u",
                          "-key", "from_user", "alice", "-key", "contact_port", "9")
        cpu1 = server.cpu_seconds() or 0.0
    st = uac_stats(read_shortmsg(short), 202)
    text = log.read_text(errors="replace")
    lines = text.count("\n")
    return {"rc": rc, "ok": st.ok, "retrans": st.retrans, "rate": st.rate,
            "cpu_us_per_msg": (cpu1 - cpu0) / args.count * 1e6,
            "log_bytes_per_msg": len(text.encode()) / args.count,
            "log_lines": lines}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=10000, help="messages per run (10000)")
    ap.add_argument("--rate", type=float, default=1000.0, help="messages per second (1000)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per level (2)")
    ap.add_argument("--port", type=int, default=5060, help="the server's UDP port (5060)")
    ap.add_argument("--uac-port", type=int, default=5081, help="SIPp's UDP port (5081)")
    ap.add_argument("--out", type=Path, default=None, help="logs here (default: a temp dir)")
    ap.add_argument("--src", action="append", default=[], metavar="NAME=DIR",
                    help="a checkout's src/ to run the server from (repeatable; default: "
                         "what PYTHONPATH gives)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="log_cost."))
    sources = [tuple(s.split("=", 1)) for s in args.src] or [("server", None)]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for rnd in range(args.rounds):
        for name, src in sources:
            if src is not None:
                os.environ["PYTHONPATH"] = str(Path(src).resolve())
            for level in ("info", "warning"):
                time.sleep(2.0)  # the previous server's port and CPU settle
                load = procs.loadavg()
                res = one_run(level, args, out, f"{name}{rnd}{level[0]}{int(time.time())}")
                results.setdefault((name, level), []).append(res)
                print(f"{name} {level:8} round {rnd}: {res['cpu_us_per_msg']:6.0f} us CPU/msg, "
                      f"{res['ok']:.0f}/{args.count} 202, retrans {res['retrans']:.0f}, "
                      f"{res['rate']:.0f} msg/s, log {res['log_bytes_per_msg']:.0f} B/msg "
                      f"({res['log_lines']:.0f} lines), load {load[0]:.1f}", flush=True)
    for name, _ in sources:
        info = statistics.median(r["cpu_us_per_msg"] for r in results[(name, "info")])
        warning = statistics.median(r["cpu_us_per_msg"] for r in results[(name, "warning")])
        print(f"{name}: median CPU per stored message: info {info:.0f} us, warning "
              f"{warning:.0f} us; info costs {100 * (info - warning) / warning:+.1f}%")
    print(f"logs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

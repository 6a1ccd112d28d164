#!/usr/bin/env python3
"""sipsilo performance bench: store rate, dump at REGISTER, both again over a
1,000,000-row silo, and the server's peak RSS.  SIPp is the load generator.

    python bench/run.py [--quick] [--store-n N] [--dump-n N] [--scale-rows N]
                        [--db-url URL] [--out DIR] [--ceiling] [--notify-off] [--no-netns]

Writes DIR/results.json and DIR/results.md and prints the table.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sipbench import benches, runner  # noqa: E402
from sipbench.server import ServerSpec  # noqa: E402

INNER = "SIPSILO_BENCH_INNER"


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, about 1-2 minutes")
    ap.add_argument("--store-n", type=int, help="messages in the confirmed store run (20000)")
    ap.add_argument("--dump-n", type=int, help="messages queued for the dump (1000)")
    ap.add_argument("--dump-q", type=int, default=200, help="rate used to queue them (200/s)")
    ap.add_argument(
        "--scale-rows", type=int, help="rows preloaded for the scale runs (1000000; 0 = skip)"
    )
    ap.add_argument("--db-url", help="msilo.db_url for the server (default: SQLite per run)")
    ap.add_argument("--out", type=Path, help="results directory (bench/results/<time>)")
    ap.add_argument("--port", type=int, default=5060, help="server SIP port (5060)")
    ap.add_argument("--ceiling", action="store_true", help="also measure SIPp<->SIPp")
    ap.add_argument(
        "--notify-off",
        action="store_true",
        help="also measure the store rate with the offline notice off",
    )
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra server setting, passed on as --set (repeatable)",
    )
    ap.add_argument(
        "--no-netns",
        action="store_true",
        help="stay in the host network namespace (for DB servers on host TCP ports)",
    )
    ap.add_argument("--max-time", type=int, default=3600, help="overall time limit, s (3600)")
    ap.add_argument(
        "--scrape-every",
        type=float,
        default=0.0,
        metavar="S",
        help="GET /metrics of --set http.listen=HOST:PORT every S seconds while the server runs",
    )
    a = ap.parse_args(argv)
    q = a.quick
    a.store_n = a.store_n or (2000 if q else 20000)
    a.dump_n = a.dump_n or (200 if q else 1000)
    a.scale_rows = a.scale_rows if a.scale_rows is not None else (100_000 if q else 1_000_000)
    for name in ("store_n", "dump_n", "dump_q", "max_time", "port"):
        if getattr(a, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    return a


def reexec(argv: list[str], args: argparse.Namespace) -> None:
    """Run again inside a new loopback-only network namespace, under a time limit:
    nothing can leave the machine and no port can clash with the host's."""
    cmd = ["timeout", "-s", "TERM", "-k", "30", str(args.max_time)]
    if not args.no_netns:
        if os.geteuid() != 0:
            sys.exit("unshare -n needs root; run as root or use --no-netns")
        cmd += ["unshare", "-n"]
    cmd += [sys.executable, str(Path(__file__).resolve()), *argv, "--out", str(args.out)]
    os.execvpe(cmd[0], cmd, {**os.environ, INNER: "1"})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.out is None:
        args.out = HERE / "results" / time.strftime("%Y%m%d-%H%M%S")
    args.out = args.out.resolve()
    if not os.environ.get(INNER):
        args.out.mkdir(parents=True, exist_ok=True)
        reexec(argv, args)
    # A TERM from the time limit must still run the finally blocks that stop servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.no_netns:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if not shutil.which("sipp"):
        sys.exit("sipp is not installed (Debian: apt-get install sip-tester)")
    args.out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    plan = runner.Plan(
        out=args.out,
        store=benches.StoreParams(
            n=args.store_n,
            step_seconds=1.0 if q else 4.0,
            min_step=100 if q else 500,
            confirm_tries=2 if q else 3,
        ),
        dump_n=args.dump_n,
        dump_q=args.dump_q,
        scale_rows=args.scale_rows,
        notify_off=args.notify_off,
        ceiling=args.ceiling,
        netns=not args.no_netns,
        # The last two arguments are the --out that reexec() appended.
        command="python bench/run.py " + shlex.join(argv[:-2]),
        server=ServerSpec(port=args.port, db_url=args.db_url, extra_sets=tuple(args.sets),
                          scrape_every=args.scrape_every),
    )
    run = runner.Run(plan)
    runner.log(f"results in {args.out}")
    run.all()
    print((args.out / "results.md").read_text())
    return 1 if run.res.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())

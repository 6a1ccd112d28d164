"""Resident memory of a server with several workers, idle and after a bounded load.

    python bench/worker_memory.py [--workers 2] [--count 10000] [--rate 1000] [--transport tcp]

Starts ``sipsilo serve`` (UDP and TCP on loopback, SQLite in a temporary data
dir, no offline notices), sums VmRSS (and PSS, shared pages counted once) over the
supervisor and its workers when
idle, then has SIPp store ``--count`` MESSAGEs to distinct offline users at
``--rate`` per second (bench/scenarios/store_distinct.xml), sampling the sum
every 0.2 s: prints idle, peak and the figure once the load is over and after
the completed transactions have gone (timer J, 32 s). Loopback only.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sipbench import procs
from sipbench.local_server import serving

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "store_distinct.xml"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    return [pid, *procs.children(pid)]


def total_mb(pid: int) -> tuple[float, list[float]]:
    parts = [procs.rss_mb(p) or 0.0 for p in tree(pid)]
    return sum(parts), parts


def total_pss_mb(pid: int) -> float:
    return sum(procs.pss_mb(p) or 0.0 for p in tree(pid))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--transport", choices=("udp", "tcp"), default="udp",
                    help="SIPp's: tcp is one connection (-t t1)")
    ap.add_argument("--settle", type=float, default=35.0, help="seconds after the load")
    args = ap.parse_args()
    port, uac = free_port(), free_port()
    with serving(f'server.listen=["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]',
                 f"server.workers={args.workers}") as (proc, _):
        time.sleep(2.0)
        idle, parts = total_mb(proc.pid)
        print(f"idle: {idle:.1f} MB ({', '.join(f'{p:.1f}' for p in parts)}); "
              f"PSS {total_pss_mb(proc.pid):.1f} MB")
        sipp = subprocess.Popen(
            ["sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-i", "127.0.0.1",
             "-p", str(uac), "-nostdin", "-m", str(args.count), "-r", str(args.rate),
             "-rp", "1s", "-l", "20000", "-timeout", f"{args.count // args.rate + 30}s",
             "-key", "user_prefix", "mem", "-key", "from_user", "load",
             "-key", "contact_port", "9", "-t", args.transport[0] + "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = peak_pss = 0.0
        while sipp.poll() is None:
            peak = max(peak, total_mb(proc.pid)[0])
            peak_pss = max(peak_pss, total_pss_mb(proc.pid))
            time.sleep(0.2)
        after, parts = total_mb(proc.pid)
        print(f"SIPp exit {sipp.returncode}; peak under load: {peak:.1f} MB "
              f"(PSS {peak_pss:.1f} MB); "
              f"just after: {after:.1f} MB ({', '.join(f'{p:.1f}' for p in parts)})")
        time.sleep(args.settle)
        settled, parts = total_mb(proc.pid)
        print(f"{args.settle:.0f} s later: {settled:.1f} MB "
              f"({', '.join(f'{p:.1f}' for p in parts)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What the [http] endpoint costs the server, measured in server CPU time, which
other work on a shared machine disturbs far less than a rate does.

* per scrape: a server with ROWS stored messages (bulk-loaded as in the scale
  runs) is scraped N times; the CPU time the server process used, divided by N;
* per /ready probe, the same way;
* per message, the counting added to the request path (a method counter, a
  response-class counter, a histogram observation), timed in this process.

    python bench/http_cost.py [--rows 1000000] [--scrapes 200]

Everything on 127.0.0.1, on free ports; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sipbench import dbtools, procs  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cost(pid: int, url: str, n: int) -> tuple[float, float]:
    """(server CPU ms per GET, wall ms per GET)."""
    before, t0 = _cpu(pid), time.monotonic()
    for _ in range(n):
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
    return (_cpu(pid) - before) / n * 1000, (time.monotonic() - t0) / n * 1000


def per_message_ns() -> float:
    """The request path's added counting, per stored MESSAGE, in nanoseconds."""
    from sipsilo.metrics import Counters
    from sipsilo.stack.core import COUNTED_METHODS

    counters = Counters()
    by_method = dict.fromkeys(COUNTED_METHODS, 0)
    sent = [0] * 7
    method, status = "MESSAGE", 202

    def one() -> None:
        by_method[method if method in COUNTED_METHODS else "OTHER"] += 1
        sent[status // 100] += 1
        counters.observe("store_commit_seconds", 0.0031)

    n = 200_000
    return min(timeit.repeat(one, number=n, repeat=5)) / n * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--scrapes", type=int, default=200)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sipsilo-http-cost.") as tmp:
        data = Path(tmp)
        db = data / "sipsilo.db"
        dbtools.sipsilo_cli(data, f"sqlite:///{db}", "db", "init")
        if a.rows:
            dbtools.preload_sqlite(db, a.rows)
        sip, http = _free_port(), _free_port()
        cmd = [sys.executable, "-m", "sipsilo", "serve", "--data-dir", str(data),
               "--set", "server.log_level=warning",
               "--set", f"server.listen=udp:127.0.0.1:{sip}",
               "--set", f"http.listen=127.0.0.1:{http}"]
        proc = procs.start(cmd, data / "server.log")
        try:
            if not procs.wait_until(lambda: _listening(http), 60):
                print((data / "server.log").read_text(), file=sys.stderr)
                return 1
            base = f"http://127.0.0.1:{http}"
            _cost(proc.pid, f"{base}/metrics", 5)  # warm up
            scrape_cpu, scrape_wall = _cost(proc.pid, f"{base}/metrics", a.scrapes)
            ready_cpu, ready_wall = _cost(proc.pid, f"{base}/ready", a.scrapes)
        finally:
            procs.stop(proc)
    ns = per_message_ns()
    print(f"rows stored: {a.rows:,}")
    print(f"/metrics: {scrape_cpu:.2f} ms server CPU, {scrape_wall:.2f} ms wall per scrape "
          f"({a.scrapes} scrapes)")
    print(f"/ready:   {ready_cpu:.2f} ms server CPU, {ready_wall:.2f} ms wall per probe")
    print(f"request-path counting: {ns:.0f} ns per stored MESSAGE")
    for every in (15.0, 1.0):
        print(f"share of one core, a scrape every {every:g} s: "
              f"{scrape_cpu / (every * 1000) * 100:.3f} %")
    subprocess.run(["uptime"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

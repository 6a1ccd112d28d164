"""Server memory while many TCP connections each hold a half-sent header, and after they close.

    python bench/conn_memory.py [--connections 2000] [--size 143360] [--port 5070]
                                [--set server.tcp_message_timeout=600]...

Each connection sends a request line, a few headers and then filler in one
header line that never ends (``--size`` bytes in all), and stays open. The
server's resident set size (VmRSS) is read before, while the connections are
held, and a few seconds after the client closed them all. Connections come from
127.0.1.x, ``--per-source`` per address, so the per-IP cap does not refuse them.
Loopback only; the run is bounded by ``--max-time``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sipbench import procs
from sipbench.server import RunningServer, ServerSpec


def half_header(port: int, size: int, n: int) -> bytes:
    head = (f"MESSAGE sip:bob@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-mem{n}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:mem@127.0.0.1>;tag=m\r\n"
            f"To: <sip:bob@127.0.0.1>\r\nCall-ID: mem-{n}\r\nCSeq: 1 MESSAGE\r\n"
            "X-Filler: ").encode()
    return head + b"a" * max(size - len(head), 0)


def still_open(sock: socket.socket) -> bool:
    """Whether the server still holds sock (an answer, a 513, means it refused it)."""
    sock.setblocking(False)
    try:
        sock.recv(65536)  # an answer (the 513) or the end: refused
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--size", type=int, default=140 * 1024)
    ap.add_argument("--per-source", type=int, default=20)
    ap.add_argument("--port", type=int, default=5070)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait after each phase")
    ap.add_argument("--max-time", type=float, default=300.0)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    if not 1 <= args.connections <= 10000:
        ap.error("--connections must be 1..10000")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="conn-memory-") as tmp:
        spec = ServerSpec(port=args.port, extra_sets=tuple(args.sets))
        with RunningServer(spec, Path(tmp), Path(tmp) / "server.log", notify=False) as srv:
            assert srv.proc is not None
            pid = srv.proc.pid
            time.sleep(args.settle)
            before = procs.rss_mb(pid)
            socks: list[socket.socket] = []
            refused = 0
            for n in range(args.connections):
                if time.monotonic() - started > args.max_time:
                    break
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.settimeout(5.0)
                sock.bind((f"127.0.1.{1 + n // args.per_source}", 0))
                try:
                    sock.connect(("127.0.0.1", args.port))
                    sock.sendall(half_header(args.port, args.size, n))
                except OSError:
                    refused += 1
                socks.append(sock)
            time.sleep(args.settle)
            held = procs.rss_mb(pid)
            open_now = sum(still_open(s) for s in socks)
            for sock in socks:
                sock.close()
            time.sleep(args.settle)
            after = procs.rss_mb(pid)
            peak = procs.peak_rss_mb(pid)
    result = {"connections": args.connections, "size": args.size, "sets": args.sets,
              "refused_while_sending": refused, "still_open_when_held": open_now,
              "rss_mb_before": before, "rss_mb_held": held, "rss_mb_after_close": after,
              "peak_rss_mb": peak}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

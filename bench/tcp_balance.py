"""How evenly the worker processes share TCP connections (``[server] workers`` > 1).

    python bench/tcp_balance.py [--workers 2] [--connections 200] [--rounds 5]

Starts ``sipsilo serve`` with that many workers and a TCP listener on
loopback, opens ``--connections`` connections (each sends one OPTIONS, so the
server holds it as a live SIP connection), asks every worker's control socket
how many TCP connections it holds, closes them, and repeats ``--rounds``
times. Prints the count per worker for each round and the largest share.
Loopback only; a temporary data dir.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sipbench.local_server import serving

from sipsilo.control.client import ask


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def options(port: int, n: int) -> bytes:
    return (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-bal{n}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:b@127.0.0.1>;tag=b{n}\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: bal-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def one_round(port: int, data: Path, workers: int, connections: int, r: int) -> list[int]:
    conns = []
    for n in range(connections):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(options(port, r * 100000 + n))
        conns.append(c)
    for c in conns:  # every one answered: accepted and read
        c.settimeout(5)
        c.recv(65536)
    counts = [int(ask(data / f"sipsilo.ctl.{i}", {"cmd": "stats"})["tcp:open_connections"])
              for i in range(workers)]
    for c in conns:
        c.close()
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    port = free_port()
    with serving(f"server.listen=tcp:127.0.0.1:{port}", f"server.workers={args.workers}",
                 "server.tcp_max_connections_per_ip=0") as (_, data):
        shares = []
        for r in range(args.rounds):
            counts = one_round(port, data, args.workers, args.connections, r)
            shares.append(max(counts) / max(sum(counts), 1))
            print(f"round {r + 1}: connections per worker {counts}")
            time.sleep(1.0)
    print(f"largest share of one worker: mean {sum(shares) / len(shares):.1%}, "
          f"worst {max(shares):.1%} (even: {1 / args.workers:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

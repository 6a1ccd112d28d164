#!/usr/bin/env python3
"""Instructions per stored MESSAGE in the sans-IO core (sipsilo.sip, sipsilo.transaction),
counted by valgrind's callgrind: a figure that holds on a machine shared with other work.

    python bench/core_cost.py [--count 2000] [--src NAME=DIR ...]

Per message, what the server's core does for a MESSAGE it stores: parse the
datagram (Via, From/To with tags, Call-ID, CSeq, Content-Type, Max-Forwards,
a 100-byte body), stamp received/rport on the top Via, compute the server
transaction key, start a non-INVITE server transaction, read the From and To
addresses, build the 202 with a To tag, pass it through the transaction,
serialise it, and fire timer J. Each --src runs under callgrind twice, with
--count and with --count/10 messages; the difference divided by the
difference in messages is the figure (interpreter start-up and imports
cancel out). ``--src pure=src --src compiled=.venv/sipsilo-core`` compares
the pure-Python core with a compiled build (the one scripts/serve.sh makes, or
``SIPSILO_MYPYC=1 pip install --no-deps --target DIR .``); the line printed per
run names which one was imported.

``--run N`` is the workload itself (what callgrind runs).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
POOL = 64  # distinct messages, cycled: distinct Call-IDs, branches and tags


def _messages() -> list[bytes]:
    body = b"x" * 100
    out = []
    for i in range(POOL):
        head = (
            f"MESSAGE sip:bob{i}@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-{i:08x}-77d1;rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: \"Alice\" <sip:alice@example.com>;tag={i:06x}a1b2\r\n"
            f"To: <sip:bob{i}@example.com>\r\n"
            f"Call-ID: {i:08x}-4b1c-9e2d@192.0.2.10\r\n"
            "CSeq: 1 MESSAGE\r\n"
            "Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n"
        )
        out.append(head.encode() + body)
    return out


def run(count: int) -> None:
    from sipsilo.sip import parser
    from sipsilo.sip.message import Request
    from sipsilo.transaction import NonInviteServerTransaction, Send, server_key

    core = "compiled" if parser.__file__.endswith(".so") else "pure-Python"
    data = _messages()
    wire = 0
    for n in range(count):
        msg = parser.parse_message(data[n % POOL])
        assert isinstance(msg, Request)
        top = msg.top_via
        assert top is not None
        top = top.copy()
        top.set_param("received", "198.51.100.7")
        top.set_param("rport", "5070")
        msg.replace_top_via(top)
        key = server_key(msg)
        machine = NonInviteServerTransaction(msg, False)
        machine.start()
        user = (msg.to.uri, msg.from_.uri, msg.content_type, key)
        response = msg.make_response(202, to_tag="ab12cd34")
        for effect in machine.on_tu_response(response):
            if isinstance(effect, Send):
                wire += len(effect.message.serialise())
        machine.on_timer("J")
        assert machine.terminated and user
    print(f"{core} core: {count} messages, {wire} bytes of answers", file=sys.stderr)


def _instructions(src: str, count: int) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, str(Path(__file__).resolve()), "--run", str(count)],
            env=env, capture_output=True, text=True, check=True,
        )
        m = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        assert m is not None, "no totals in the callgrind output"
        core = next((ln for ln in proc.stderr.splitlines() if " core: " in ln), "?")
        return int(m.group(1)), core.split(" core:")[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=2000, help="messages in the long run (2000)")
    ap.add_argument("--src", action="append", default=[], metavar="NAME=DIR",
                    help="a directory put first on PYTHONPATH (repeatable; default: src)")
    ap.add_argument("--run", type=int, metavar="N", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run is not None:
        run(args.run)
        return 0
    srcs = [s.split("=", 1) for s in args.src] or [["src", str(HERE.parent / "src")]]
    short = max(args.count // 10, 1)
    figures = {}
    for name, src in srcs:
        long_ir, core = _instructions(src, args.count)
        short_ir, _ = _instructions(src, short)
        per = (long_ir - short_ir) / (args.count - short)
        figures[name] = per
        print(f"{name:>10} ({core} core): {per:,.0f} instructions per message")
    if len(figures) > 1:
        base = next(iter(figures.values()))
        for name, per in list(figures.items())[1:]:
            print(f"{name:>10}: {base / per:.2f}x fewer instructions than {srcs[0][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

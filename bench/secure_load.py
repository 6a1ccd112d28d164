#!/usr/bin/env python3
"""Store rate over TLS and secure WebSocket, beside UDP: sipsilo's own load generator.

Debian's SIPp has no TLS ("To use a TLS transport you must compile SIPp with
OpenSSL") and no WebSocket, so this asyncio client does the sending: MESSAGEs
to distinct offline users (every one is stored, as in bench/run.py's store
run), over C connections at once, each keeping at most W requests in flight
(closed loop: the figure is the rate the server sustains, not an offered
rate). The same generator over UDP is the check against SIPp: its UDP figure
should sit near bench/run.py's store rate for the same settings.

    python bench/secure_load.py [--n 5000] [--connections 4] [--window 32]
                                [--transports udp,tls,wss] [--out DIR]

Loopback only; every run is bounded by --n and --max-time. A fresh server
(with a throw-away self-signed certificate) per transport.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sipbench import procs  # noqa: E402
from sipbench.server import RunningServer, ServerSpec  # noqa: E402

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ", re.M)
_CALL_ID = re.compile(rb"^Call-ID: *(\S+)", re.M | re.I)


@dataclass
class Result:
    transport: str
    sent: int = 0
    accepted: int = 0  # 202
    other: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    timed_out: bool = False
    server_cpu_us_per_msg: float | None = None


def message(i: int, port: int, transport: str, local: str) -> bytes:
    body = f"sipsilo secure bench seq={i}".encode()
    via_host = "bench.invalid" if transport.startswith("ws") else local
    return (
        f"MESSAGE sip:sb{i}@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {via_host};branch=z9hG4bKsb{i}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=sb{i}\r\n"
        f"To: <sip:sb{i}@127.0.0.1:{port}>\r\nCall-ID: sb{i}@bench\r\nCSeq: 1 MESSAGE\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Counter:
    """Shared by the connections: which message is next, and what came back."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.next = 0
        self.sent_at: dict[bytes, float] = {}
        self.latencies: list[float] = []
        self.codes: dict[int, int] = {}
        self.done = asyncio.Event()

    def take(self) -> int | None:
        if self.next >= self.n:
            return None
        self.next += 1
        return self.next

    def answer(self, data: bytes) -> None:
        status = _STATUS.match(data)
        call_id = _CALL_ID.search(data)
        if status is None or call_id is None:
            return
        code = int(status.group(1))
        if code < 200:
            return
        started = self.sent_at.pop(call_id.group(1), None)
        if started is None:
            return
        self.latencies.append(time.monotonic() - started)
        self.codes[code] = self.codes.get(code, 0) + 1
        if sum(self.codes.values()) >= self.n:
            self.done.set()


def split_stream(buf: bytearray) -> list[bytes]:
    """Whole SIP messages off the front of a TCP/TLS byte stream."""
    out = []
    while True:
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        head = bytes(buf[:end])
        m = re.search(rb"^Content-Length: *(\d+)", head, re.M | re.I)
        total = end + 4 + (int(m.group(1)) if m else 0)
        if len(buf) < total:
            return out
        out.append(bytes(buf[:total]))
        del buf[:total]


async def stream_worker(kind: str, port: int, window: int, counter: Counter,
                        ctx: ssl.SSLContext | None) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1" if ctx else None)
    host, lport = writer.get_extra_info("sockname")[:2]
    local = f"{host}:{lport}"
    ws = None
    if kind in ("ws", "wss"):
        ws = WSConnection(ConnectionType.CLIENT)
        writer.write(ws.send(Request(host=f"127.0.0.1:{port}", target="/", subprotocols=["sip"])))
        while True:
            ws.receive_data(await reader.read(65536))
            if any(isinstance(e, AcceptConnection) for e in ws.events()):
                break
    slots = asyncio.Semaphore(window)

    async def read() -> None:
        buf = bytearray()
        while not counter.done.is_set():
            data = await reader.read(65536)
            if not data:
                return
            if ws is None:
                buf += data
                messages = split_stream(buf)
            else:
                ws.receive_data(data)
                messages = [e.data.encode() if isinstance(e.data, str) else e.data
                            for e in ws.events() if isinstance(e, TextMessage)]
            for m in messages:
                counter.answer(m)
                slots.release()

    reading = asyncio.create_task(read())
    try:
        while (i := counter.take()) is not None:
            await slots.acquire()
            data = message(i, port, kind, local)
            counter.sent_at[f"sb{i}@bench".encode()] = time.monotonic()
            writer.write(data if ws is None else ws.send(TextMessage(data=data.decode())))
            await writer.drain()
        await counter.done.wait()
    finally:
        reading.cancel()
        writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, counter: Counter, slots: asyncio.Semaphore) -> None:
        self.counter, self.slots = counter, slots

    def datagram_received(self, data: bytes, addr: object) -> None:
        if _STATUS.match(data) and not data.startswith(b"SIP/2.0 100"):
            self.counter.answer(data)
            self.slots.release()


async def udp_worker(port: int, window: int, counter: Counter) -> None:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(window)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Udp(counter, slots), local_addr=("127.0.0.1", 0))
    host, lport = transport.get_extra_info("sockname")[:2]
    local = f"{host}:{lport}"
    try:
        while (i := counter.take()) is not None:
            await slots.acquire()
            counter.sent_at[f"sb{i}@bench".encode()] = time.monotonic()
            transport.sendto(message(i, port, "udp", local), ("127.0.0.1", port))
        await counter.done.wait()
    finally:
        transport.close()


async def load(kind: str, port: int, n: int, connections: int, window: int,
               ca: Path, max_time: float) -> Result:
    counter = Counter(n)
    ctx = None
    if kind in ("tls", "wss"):
        ctx = ssl.create_default_context(cafile=str(ca))
    if kind == "udp":
        workers = [udp_worker(port, window, counter) for _ in range(connections)]
    else:
        workers = [stream_worker(kind, port, window, counter, ctx) for _ in range(connections)]
    started = time.monotonic()
    result = Result(kind)
    try:
        await asyncio.wait_for(asyncio.gather(*workers), max_time)
    except TimeoutError:
        result.timed_out = True
    result.seconds = time.monotonic() - started
    result.sent = counter.next
    result.accepted = counter.codes.pop(202, 0)
    result.other = counter.codes
    result.rate = result.accepted / result.seconds if result.seconds else 0.0
    if counter.latencies:
        ordered = sorted(counter.latencies)
        result.p50_ms = statistics.median(ordered) * 1000
        result.p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return result


def _run(main: Coroutine[Any, Any, Result]) -> Result:
    """uvloop when installed, like the server: the generator must not be the bottleneck."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def self_signed(directory: Path) -> Path:
    """cert.pem/key.pem for 127.0.0.1 in directory (throw-away); returns the cert (its CA)."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(directory / "key.pem"),
         "-out", str(directory / "cert.pem")], check=True, capture_output=True, timeout=60)
    return directory / "cert.pem"


def run_one(kind: str, args: argparse.Namespace, out: Path) -> Result:
    port, secure = args.port, args.port + 1
    data_dir = out / f"server-{kind}"
    ca = self_signed(data_dir)
    listen = [f"udp:127.0.0.1:{port}"]
    if kind != "udp":
        listen.append(f"{kind}:127.0.0.1:{secure}")
    spec = ServerSpec(port=port, extra_sets=(
        f"server.listen={json.dumps(listen)}", "tls.certificate=cert.pem",
        "tls.private_key=key.pem", *args.sets))
    # Notices off: the messages carry no Contact to send them to (bench/run.py's
    # notice sink is a SIPp UDP scenario), so compare with its notice-off figure.
    with RunningServer(spec, data_dir, out / f"server-{kind}.log", False) as server:
        if kind != "udp" and not procs.wait_until(
                lambda: secure in procs._bound_ports("tcp", "0A"), 20):
            raise RuntimeError(f"{kind} listener did not come up")
        cpu0 = server.cpu_seconds()
        result = _run(load(kind, port if kind == "udp" else secure, args.n,
                           args.connections, args.window, ca, args.max_time))
        cpu1 = server.cpu_seconds()
        if cpu0 is not None and cpu1 is not None and result.sent:
            result.server_cpu_us_per_msg = (cpu1 - cpu0) / result.sent * 1e6
    return result


def table(results: list[Result]) -> str:
    lines = ["| transport | messages | 202 | other | stored/s | p50 ms | p99 ms "
             "| server CPU µs/msg |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        other = ", ".join(f"{k}×{v}" for k, v in sorted(r.other.items())) or "–"
        if r.timed_out:
            other += " (timed out)"
        cpu = f"{r.server_cpu_us_per_msg:.0f}" if r.server_cpu_us_per_msg else "–"
        lines.append(f"| {r.transport} | {r.sent} | {r.accepted} | {other} | {r.rate:.0f} | "
                     f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {cpu} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="messages per transport (5000)")
    ap.add_argument("--connections", type=int, default=4, help="connections (UDP: sockets)")
    ap.add_argument("--window", type=int, default=32, help="requests in flight per connection")
    ap.add_argument("--transports", default="udp,tls,wss")
    ap.add_argument("--port", type=int, default=25060, help="server UDP port; secure = port+1")
    ap.add_argument("--max-time", type=float, default=300.0, help="seconds per transport")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.n < 1 or args.n > 1_000_000:
        ap.error("--n must be between 1 and 1000000")
    out = args.out or Path(tempfile.mkdtemp(prefix="sipsilo-secure-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    results = [run_one(kind.strip(), args, out) for kind in args.transports.split(",")]
    text = table(results)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    (out / "results.md").write_text(text + "\n")
    print(text)
    print(f"\nresults in {out} (server without offline notices, "
          f"{args.connections} connections × window {args.window}, pid {os.getpid()})")
    return 0 if all(r.accepted == r.sent and not r.timed_out for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Soak: mixed SIP traffic against a real `sipsilo serve`, SIGKILLed at random.

    python bench/soak.py                          # 10 minutes on SQLite
    python bench/soak.py --seconds 60 --db postgresql

Loopback only, bounded in time (``--seconds``) and in rate (every UA waits for
its answer and pauses between requests). What runs at once, all over UDP:

* senders (local users, digest-authenticated) write numbered MESSAGEs to
  recipients picked at random -- stored when the recipient is offline,
  relayed when it is online, stored behind a delivery in progress;
* recipients churn: REGISTER (authenticated), stay online a while, REGISTER
  with Expires 0, stay offline a while; every REGISTER starts a dump; their
  socket answers 200 to every MESSAGE, registered or not, so no delivery
  fails except by a crash;
* an attacker fails authentication (wrong password, REGISTER and MESSAGE);
* the server is SIGKILLed every ``--kill-min``..``--kill-max`` seconds and
  started again at once (in-memory bindings are lost: recipients re-register
  on their next churn step).

At the end traffic stops, every recipient registers and the soak waits for the
silo to drain (``claim_ttl`` is short so a delivery claimed by a killed server
is retaken). The invariants, printed and returned as the exit status:

1. every MESSAGE answered 202/200 reached its recipient;
2. per (sender, recipient) the first deliveries come in the order sent;
3. a message delivered twice only after a crash came between the copies, and
   every copy carries the Call-ID the sender used;
4. no 5xx answer outside a restart window (from the kill until ``--grace``
   seconds after the new server listens).

MESSAGEs that got no final answer (the server died under them) are counted
separately: they may or may not be delivered, but never out of order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PG_URL = os.environ.get("SIPSILO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
T1, T2, TIMER_F = 0.5, 4.0, 32.0
BODY = re.compile(r"soak:(s\d+):(\d+):(r\d+)")


def now() -> float:
    return time.monotonic()


def free_port() -> int:
    for _ in range(200):
        port = random.randint(20000, 40000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                u.bind((HOST, port))
                t.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


# -- the server under test --------------------------------------------------

@dataclass
class Server:
    data_dir: Path
    port: int
    settings: list[str]
    proc: subprocess.Popen[bytes] | None = None
    windows: list[list[float]] = field(default_factory=list)  # [kill, ready + grace]
    kills: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cmd(self, *args: str) -> list[str]:
        sets = [f"--set={s}" for s in self.settings]
        return [sys.executable, "-m", "sipsilo", *args, "--data-dir", str(self.data_dir), *sets]

    def add_user(self, aor: str, password: str) -> None:
        proc = subprocess.run(self.cmd("user", "add", aor, "--password-stdin"),
                              input=password + "\n", capture_output=True, text=True,
                              timeout=60, env=_env())
        if proc.returncode != 0:
            raise RuntimeError(f"user add {aor}: {proc.stderr.strip()}")

    def start(self, timeout: float = 30.0) -> float:
        log = self.data_dir / "server.log"
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd("serve"), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=_env(),
                                         start_new_session=True)
        end = now() + timeout
        while now() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {_tail(log, offset)}")
            with log.open("rb") as f:
                f.seek(offset)
                if b"listening on" in f.read():
                    return now()
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {_tail(log, offset)}")

    def kill_and_restart(self, grace: float) -> None:
        with self.lock:
            window = [now(), float("inf")]
            self.windows.append(window)
            self.kills.append(window[0])
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            window[1] = self.start() + grace

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def in_window(self, *times: float) -> bool:
        return any(lo <= t <= hi for lo, hi in self.windows for t in times)

    def crash_between(self, first: float, last: float) -> bool:
        return any(first <= k <= last for k in self.kills)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SIPSILO_")}


def _tail(log: Path, offset: int) -> str:
    with log.open("rb") as f:
        f.seek(offset)
        return f.read()[-2000:].decode(errors="replace")


# -- a UDP user agent ---------------------------------------------------------

def _header(msg: str, name: str) -> str:
    for line in msg.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def _headers(msg: str, name: str) -> list[str]:
    return [line.partition(":")[2].strip()
            for line in msg.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
            if line.partition(":")[0].strip().lower() == name.lower()]


def _digest(challenge: str, method: str, uri: str, user: str, password: str,
            header: str) -> str:
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.split(None, 1)[1]))
    algorithm = params.get("algorithm", "MD5")
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    cnonce, nc = secrets.token_hex(4), "00000001"
    ha1 = hx(f"{user}:{params['realm']}:{password}")
    response = hx(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{hx(f'{method}:{uri}')}")
    return (f'{header}: Digest username="{user}", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", '
            f'algorithm={algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}"')


class Ua:
    """One UDP socket: client transactions with retransmission, and a UAS that
    answers 200 to every MESSAGE it receives (recording it)."""

    def __init__(self, name: str, server: Server, password: str, report: Report) -> None:
        self.name, self.server, self.password, self.report = name, server, password, report
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.waiting: dict[str, tuple[threading.Event, list[str]]] = {}
        self.cseq = 0
        self.closed = False
        threading.Thread(target=self._reader, daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def _reader(self) -> None:
        while not self.closed:
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            msg = data.decode(errors="replace")
            if msg.startswith("SIP/2.0 "):
                key = f"{_header(msg, 'Call-ID')} {_header(msg, 'CSeq')}"
                entry = self.waiting.get(key)
                if entry is not None and int(msg[8:11]) >= 200:
                    entry[1].append(msg)
                    entry[0].set()
                continue
            method = msg.split(" ", 1)[0]
            if method == "MESSAGE":
                found = BODY.search(msg.split("\r\n\r\n", 1)[-1])
                if found:
                    self.report.delivered(found.group(1), int(found.group(2)), found.group(3),
                                          _header(msg, "Call-ID"))
            if method != "ACK":
                self._answer(msg, addr)

    def _answer(self, request: str, addr: tuple[str, int]) -> None:
        to = _header(request, "To")
        lines = ["SIP/2.0 200 OK", *[f"Via: {v}" for v in _headers(request, "Via")],
                 f"From: {_header(request, 'From')}",
                 f"To: {to}{'' if 'tag=' in to else ';tag=' + self.name}",
                 f"Call-ID: {_header(request, 'Call-ID')}", f"CSeq: {_header(request, 'CSeq')}",
                 "Content-Length: 0"]
        with contextlib.suppress(OSError):
            self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)

    def transaction(self, method: str, ruri: str, to_user: str, call_id: str,
                    extra: list[str], body: str = "") -> str | None:
        """Send, retransmit per RFC 3261 timer E/F, return the final answer or None."""
        self.cseq += 1
        srv = f"{HOST}:{self.server.port}"
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {HOST}:{self.port};rport;branch=z9hG4bK{secrets.token_hex(8)}",
                 "Max-Forwards: 70", f"From: <sip:{self.name}@{srv}>;tag={self.name}t",
                 f"To: <sip:{to_user}@{srv}>", f"Call-ID: {call_id}",
                 f"CSeq: {self.cseq} {method}", f"Contact: <sip:{self.name}@{HOST}:{self.port}>",
                 *extra]
        if body:
            lines.append("Content-Type: text/plain")
        lines.append(f"Content-Length: {len(body.encode())}")
        data = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
        event, got = threading.Event(), []
        key = f"{call_id} {self.cseq} {method}"
        self.waiting[key] = (event, got)
        try:
            interval, end = T1, now() + TIMER_F
            while now() < end:
                with contextlib.suppress(OSError):
                    self.sock.sendto(data, (HOST, self.server.port))
                if event.wait(min(interval, end - now())):
                    return got[0]
                interval = min(interval * 2, T2)
            return None
        finally:
            self.waiting.pop(key, None)

    def request(self, method: str, to_user: str, call_id: str, extra: list[str],
                body: str = "", password: str | None = None) -> tuple[int | None, float]:
        """A request answered through at most one digest challenge: (status, sent at)."""
        srv = f"{HOST}:{self.server.port}"
        ruri = f"sip:{srv}" if method == "REGISTER" else f"sip:{to_user}@{srv}"
        sent = now()
        answer = self.transaction(method, ruri, to_user, call_id, extra, body)
        if answer is not None and int(answer[8:11]) in (401, 407):
            name = "WWW-Authenticate" if answer[8:11] == "401" else "Proxy-Authenticate"
            header = "Authorization" if name == "WWW-Authenticate" else "Proxy-Authorization"
            challenge = _headers(answer, name)[0]
            auth = _digest(challenge, method, ruri, self.name, password or self.password, header)
            sent = now()
            answer = self.transaction(method, ruri, to_user, call_id, [*extra, auth], body)
        status = None if answer is None else int(answer[8:11])
        self.report.answer(method, status, sent, self.server)
        return status, sent


# -- what happened ------------------------------------------------------------

@dataclass
class Sent:
    sender: str
    seq: int
    rcpt: str
    call_id: str
    status: int | None
    at: float


class Report:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[tuple[str, int], Sent] = {}
        self.deliveries: dict[tuple[str, int], list[tuple[float, str]]] = defaultdict(list)
        self.order: dict[tuple[str, str], list[int]] = defaultdict(list)  # first deliveries
        self.statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.bad_5xx: list[str] = []

    def delivered(self, sender: str, seq: int, rcpt: str, call_id: str) -> None:
        with self.lock:
            copies = self.deliveries[(sender, seq)]
            if not copies:
                self.order[(sender, rcpt)].append(seq)
            copies.append((now(), call_id))

    def answer(self, method: str, status: int | None, sent: float, server: Server) -> None:
        with self.lock:
            self.statuses[method]["timeout" if status is None else str(status)] += 1
        if status is not None and status >= 500 and not server.in_window(sent, now()):
            with self.lock:
                self.bad_5xx.append(f"{method} {status} at +{sent:.1f}s")

    def record(self, sent: Sent) -> None:
        with self.lock:
            self.sent[(sent.sender, sent.seq)] = sent


# -- the traffic ----------------------------------------------------------------

def sender_loop(ua: Ua, rcpts: list[str], report: Report, stop: threading.Event,
                rng: random.Random) -> None:
    seq = 0
    while not stop.is_set():
        seq += 1
        rcpt = rng.choice(rcpts)
        call_id = f"soak-{ua.name}-{seq}-{secrets.token_hex(3)}"
        status, at = ua.request("MESSAGE", rcpt, call_id, [],
                                body=f"soak:{ua.name}:{seq}:{rcpt}")
        report.record(Sent(ua.name, seq, rcpt, call_id, status, at))
        stop.wait(rng.uniform(0.02, 0.3))


def recipient_loop(ua: Ua, stop: threading.Event, rng: random.Random) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        ua.request("REGISTER", ua.name, f"reg-{ua.name}-{n}", ["Expires: 120"])
        stop.wait(rng.uniform(1, 8))
        n += 1
        ua.request("REGISTER", ua.name, f"reg-{ua.name}-{n}", ["Expires: 0"])
        stop.wait(rng.uniform(1, 8))


def attacker_loop(ua: Ua, victims: list[str], stop: threading.Event,
                  rng: random.Random) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        if rng.random() < 0.5:
            ua.request("REGISTER", ua.name, f"bad-{n}", ["Expires: 60"], password="wrong")
        else:
            ua.request("MESSAGE", rng.choice(victims), f"bad-{n}", [], body="spam",
                       password="wrong")
        stop.wait(rng.uniform(0.5, 1.5))


def killer_loop(server: Server, stop: threading.Event, rng: random.Random,
                low: float, high: float, grace: float) -> None:
    while not stop.wait(rng.uniform(low, high)):
        server.kill_and_restart(grace)


def drain(recipients: list[Ua], report: Report, server: Server, timeout: float) -> float:
    """Register everyone and wait until every accepted MESSAGE arrived (or timeout)."""
    start = now()
    end = start + timeout
    n = 0
    while now() < end:
        n += 1
        for ua in recipients:
            ua.request("REGISTER", ua.name, f"final-{ua.name}-{n}", ["Expires: 600"])
        wait_end = min(end, now() + 10)
        while now() < wait_end:
            if not _missing(report):
                return now() - start
            time.sleep(0.5)
    return now() - start


def _missing(report: Report) -> list[Sent]:
    with report.lock:
        return [s for s in report.sent.values()
                if s.status in (200, 202) and (s.sender, s.seq) not in report.deliveries]


def verdict(report: Report, server: Server) -> dict[str, Any]:
    missing = _missing(report)
    disorder = []
    for (sender, rcpt), seqs in report.order.items():
        if seqs != sorted(seqs):
            disorder.append(f"{sender}->{rcpt}: {seqs}")
    dup_ok, dup_bad, stored_twice = 0, [], []
    for key, copies in report.deliveries.items():
        if len(copies) < 2:
            continue
        sent = report.sent.get(key)
        same_id = sent is not None and all(cid == sent.call_id for _, cid in copies)
        what = (f"{key[0]}:{key[1]} x{len(copies)} call-ids "
                f"{sorted({c for _, c in copies})} sent {sent and sent.call_id}")
        if same_id and server.crash_between(copies[0][0], copies[-1][0]):
            dup_ok += 1  # a crash mid-delivery: the row was delivered again
        elif same_id and sent is not None and server.crash_between(sent.at, copies[0][0]):
            # no crash between the copies, but one while it was being stored: the
            # sender's retransmission to the restarted server stored a second row
            stored_twice.append(what)
        else:
            dup_bad.append(what)
    by_status: dict[str, int] = defaultdict(int)
    for s in report.sent.values():
        by_status["timeout" if s.status is None else str(s.status)] += 1
    unknown = [s for s in report.sent.values() if s.status is None]
    return {
        "messages_sent": len(report.sent),
        "message_outcomes": dict(sorted(by_status.items())),
        "accepted_202": by_status.get("202", 0),
        "relayed_200": by_status.get("200", 0),
        "no_answer": len(unknown),
        "no_answer_delivered": sum(1 for s in unknown if (s.sender, s.seq) in report.deliveries),
        "delivered_distinct": len(report.deliveries),
        "duplicates_after_crash": dup_ok,
        "kills": len(server.kills),
        "answers": {m: dict(sorted(v.items())) for m, v in report.statuses.items()},
        "violations": {
            "accepted_not_delivered": [f"{s.sender}:{s.seq}->{s.rcpt} ({s.status}, "
                                       f"{s.call_id})" for s in missing],
            "out_of_order": disorder,
            "bad_duplicates": dup_bad,
            "stored_twice_after_crash": stored_twice,
            "5xx_outside_restart": report.bad_5xx,
        },
    }


# -- setup ------------------------------------------------------------------------

def pg_cleanup(tables: list[str]) -> None:
    from sipsilo.db.base import open_pool, run_txn
    from sipsilo.db.errors import StoreError
    from sipsilo.db.url import parse_db_url as parse_sql_url

    async def go() -> None:
        pool = open_pool(parse_sql_url(PG_URL), 1, 1)
        await pool.open()
        try:
            for table in tables:
                for stmt, args in ((f"DROP TABLE IF EXISTS {table}", ()),
                                   ("DELETE FROM version WHERE table_name = %s", (table,)),
                                   ("DELETE FROM sipsilo_version WHERE component IN (%s, %s)",
                                    (f"silo:{table}", f"auth:{table}"))):
                    with contextlib.suppress(StoreError):
                        await run_txn(pool, lambda c, s=stmt, a=args: c.execute(s, a), txn=False)
        finally:
            await pool.close()

    asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600, help="traffic time (default 600)")
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--recipients", type=int, default=6)
    ap.add_argument("--kill-min", type=float, default=15.0)
    ap.add_argument("--kill-max", type=float, default=45.0)
    ap.add_argument("--grace", type=float, default=3.0,
                    help="seconds after a restart in which 5xx are expected")
    ap.add_argument("--drain", type=float, default=90.0, help="max seconds to drain at the end")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="keep the data dir (logs) here")
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)

    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="sipsilo-soak-")
        data = Path(tmp.name)
    else:
        data = args.out
        data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tag = secrets.token_hex(4)
    settings = [f'server.listen=["udp:{HOST}:{port}"]', "msilo.claim_ttl=10",
                "msilo.check_time=5", "tm.fr_timer=4", 'auth.algorithms=["MD5", "SHA-256"]',
                'server.log_level="info"']
    pg_tables: list[str] = []
    if args.db == "postgresql":
        pg_tables = [f"soak_silo_{tag}", f"soak_sub_{tag}"]
        settings += [f"msilo.db_url={PG_URL}", f"msilo.db_table={pg_tables[0]}",
                     f"auth.db_table={pg_tables[1]}"]
    server = Server(data, port, settings)
    report = Report()
    senders = [f"s{i}" for i in range(args.senders)]
    rcpts = [f"r{i}" for i in range(args.recipients)]
    uas: list[Ua] = []
    result: dict[str, Any] = {}
    try:
        for name in [*senders, *rcpts, "mallory"]:
            server.add_user(f"{name}@{HOST}", f"pw-{name}")
        server.start()
        print(f"soak: {args.seconds:.0f} s on {args.db}, seed {seed}, port {port}, "
              f"data {data}", flush=True)
        stop = threading.Event()
        threads = []
        for name in senders:
            ua = Ua(name, server, f"pw-{name}", report)
            uas.append(ua)
            threads.append(threading.Thread(target=sender_loop, args=(
                ua, rcpts, report, stop, random.Random(rng.random()))))
        recipients = [Ua(name, server, f"pw-{name}", report) for name in rcpts]
        uas += recipients
        threads += [threading.Thread(target=recipient_loop, args=(
            ua, stop, random.Random(rng.random()))) for ua in recipients]
        attacker = Ua("mallory", server, "pw-mallory", report)
        uas.append(attacker)
        threads.append(threading.Thread(target=attacker_loop, args=(
            attacker, rcpts, stop, random.Random(rng.random()))))
        killer = threading.Thread(target=killer_loop, args=(
            server, stop, random.Random(rng.random()), args.kill_min, args.kill_max,
            args.grace))
        started = now()
        for t in threads:
            t.start()
        killer.start()
        stop.wait(args.seconds)
        stop.set()
        killer.join()
        for t in threads:
            t.join(TIMER_F * 2 + 5)
        traffic = now() - started
        drained = drain(recipients, report, server, args.drain)
        result = verdict(report, server)
        result.update(seed=seed, db=args.db, traffic_seconds=round(traffic, 1),
                      drain_seconds=round(drained, 1),
                      stop_exit=server.stop())
    finally:
        for ua in uas:
            ua.close()
        server.stop()
        if pg_tables:
            pg_cleanup(pg_tables)
        if tmp is not None:
            tmp.cleanup()
    violations = result["violations"]
    for key, value in result.items():
        if key != "violations":
            print(f"{key}: {value}")
    ok = True
    for name, items in violations.items():
        print(f"invariant {name}: {'OK' if not items else f'VIOLATED ({len(items)})'}")
        for item in items[:20]:
            print(f"    {item}")
        ok = ok and not items
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Store rate and cost of N instances on one PostgreSQL, next to one instance.

    python bench/cluster.py [--count 6000] [--rate 600] [--deliver 2000] [--pgbench 15]

Creates a scratch database on the PostgreSQL of SIPSILO_BENCH_PG (default
postgresql://postgres@127.0.0.1:5432), dropped at the end, and runs, each phase
bounded in count and time, on loopback only:

1. one ``sipsilo serve`` (UDP, bindings and silo in the scratch database) and one
   SIPp generator storing ``--count`` MESSAGEs to distinct offline users at
   ``--rate`` per second (bench/scenarios/store_distinct.xml);
2. three instances on the same database, one SIPp generator each (3 x count);
3. delivery: ``--deliver`` messages stored for bob, then bob registers over TCP
   at one instance and answers each MESSAGE (a dump);
4. PostgreSQL alone: ``pgbench -S`` and a one-row INSERT script for ``--pgbench``
   seconds each, 4 clients, in a second scratch database.

Reported per phase: messages per second (wall time of the generators), CPU seconds
of the server processes per message (utime + stime from /proc), and transactions
committed in the database per message (pg_stat_database.xact_commit: with
autocommit, one per statement outside an explicit transaction; sipsilo's explicit
transactions count once). Timings depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "store_distinct.xml"
PG = os.environ.get("SIPSILO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def psql(db: str, statement: str) -> str:
    out = subprocess.run(["psql", f"{PG}/{db}", "-Atc", statement], capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.strip()


def commits(db: str) -> int:
    # Counters are flushed by each backend at the end of a transaction (and at
    # most once a second when idle): ask after a short pause.
    time.sleep(1.2)
    return int(psql("postgres", "SELECT xact_commit FROM pg_stat_database"
                                f" WHERE datname = '{db}'"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Instance:
    def __init__(self, root: Path, name: str, url: str, secret: str) -> None:
        self.dir = root / name
        self.dir.mkdir()
        (self.dir / "auth.secret").write_text(secret)
        (self.dir / "auth.secret").chmod(0o600)
        self.port = free_port()
        self.http = free_port()
        self.log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipsilo", "serve", "--data-dir", str(self.dir),
             "--set", f'server.listen=["udp:127.0.0.1:{self.port}", '
                      f'"tcp:127.0.0.1:{self.port}"]',
             "--set", "server.log_level=warning", "--set", f"msilo.db_url={url}",
             "--set", f"registrar.db_url={url}", "--set", "msilo.add_date=0",
             "--set", "cluster.advertise=127.0.0.1:0", "--set", f"cluster.instance_id={name}",
             "--set", f"http.listen=127.0.0.1:{self.http}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def wait_up(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit((self.dir / "server.log").read_text()[-2000:])
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise SystemExit(f"{self.dir} did not start")

    def statements(self) -> int:
        """sipsilo_db_statements_total of this instance (its /metrics)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("sipsilo_db_statements_total "):
                    return int(float(line.split()[1]))
        raise SystemExit("no sipsilo_db_statements_total in /metrics")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def generators(instances: list[Instance], count: int, rate: int, tag: str) -> float:
    """One SIPp per instance storing *count* messages; the wall time of them all."""
    started = time.monotonic()
    procs = [subprocess.Popen(
        ["sipp", f"127.0.0.1:{inst.port}", "-sf", str(SCENARIO), "-i", "127.0.0.1",
         "-p", str(free_port()), "-nostdin", "-m", str(count), "-r", str(rate), "-rp", "1s",
         "-l", "2000", "-timeout", f"{count // rate + 60}s",
         "-key", "user_prefix", f"{tag}{n}u", "-key", "from_user", "load",
         "-key", "contact_port", "9"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n, inst in enumerate(instances)]
    failed = [p.wait() for p in procs]
    elapsed = time.monotonic() - started
    if any(failed):
        print(f"  note: SIPp exit codes {failed} (some calls failed or timed out)")
    return elapsed


def measure(db: str, instances: list[Instance], count: int, rate: int, tag: str) -> None:
    before_cpu = sum(cpu_seconds(i.proc.pid) for i in instances)
    before = commits(db)
    before_st = sum(i.statements() for i in instances)
    elapsed = generators(instances, count, rate, tag)
    total = count * len(instances)
    cpu = sum(cpu_seconds(i.proc.pid) for i in instances) - before_cpu
    stored = int(psql(db, "SELECT COUNT(*) FROM silo"))
    xacts = commits(db) - before
    st = sum(i.statements() for i in instances) - before_st
    print(f"  {len(instances)} instance(s): {total} MESSAGEs in {elapsed:.1f} s = "
          f"{total / elapsed:.0f}/s; server CPU {1000 * cpu / total:.2f} ms per message; "
          f"{st / total:.2f} statements and {xacts / total:.2f} commits per stored message; "
          f"{stored} rows")


def deliver(db: str, inst: Instance, count: int) -> None:
    """Store *count* for bob, then bob registers over TCP and takes them all."""
    subprocess.run(
        ["sipp", f"127.0.0.1:{inst.port}", "-sf", str(SCENARIO), "-i", "127.0.0.1",
         "-p", str(free_port()), "-nostdin", "-m", str(count), "-r", "500", "-rp", "1s",
         "-timeout", f"{count // 500 + 60}s", "-key", "user_prefix", "bob",
         "-key", "from_user", "load", "-key", "contact_port", "9"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    # store_distinct adds the call number to the user; store for "bob" instead:
    psql(db, "UPDATE silo SET username = 'bob' WHERE username LIKE 'bob%'")
    waiting = int(psql(db, "SELECT COUNT(*) FROM silo WHERE username = 'bob'"))
    before_cpu = cpu_seconds(inst.proc.pid)
    before = commits(db)
    before_st = inst.statements()
    sock = socket.create_connection(("127.0.0.1", inst.port))
    sock.settimeout(10)
    local = sock.getsockname()
    reg = (f"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {local[0]}:{local[1]};"
           f"branch=z9hG4bK{uuid.uuid4().hex}\r\nMax-Forwards: 70\r\n"
           "From: <sip:bob@127.0.0.1>;tag=b1\r\nTo: <sip:bob@127.0.0.1>\r\n"
           f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\n"
           "Contact: <sip:bob@b0b.invalid;transport=tcp>;reg-id=1;"
           f"+sip.instance=\"<urn:uuid:{uuid.uuid4()}>\"\r\nContent-Length: 0\r\n\r\n")
    started = time.monotonic()
    sock.sendall(reg.encode())
    got, buf = 0, b""
    while got < waiting:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        buf += data
        while b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(rest) < length:
                break
            buf = rest[length:]
            if head.startswith(b"MESSAGE "):
                got += 1
                keep = [ln for ln in head.split(b"\r\n")[1:] if ln.split(b":")[0].lower()
                        in (b"via", b"from", b"to", b"call-id", b"cseq")]
                keep = [ln + b";tag=ok" if ln.lower().startswith(b"to:") else ln for ln in keep]
                sock.sendall(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep)
                             + b"\r\nContent-Length: 0\r\n\r\n")
    elapsed = time.monotonic() - started
    time.sleep(1.0)  # the last run's rows are deleted after its 2xxs
    sock.close()
    cpu = cpu_seconds(inst.proc.pid) - before_cpu
    xacts = commits(db) - before
    st = inst.statements() - before_st
    print(f"  delivery: {got} of {waiting} in {elapsed:.1f} s = {got / max(elapsed, 1e-9):.0f}/s;"
          f" server CPU {1000 * cpu / max(got, 1):.2f} ms per message;"
          f" {st / max(got, 1):.2f} statements and {xacts / max(got, 1):.2f} commits"
          f" per delivered message")


def pgbench(seconds: int) -> None:
    db = f"sipsilo_pgbench_{secrets.token_hex(4)}"
    psql("postgres", f"CREATE DATABASE {db}")
    try:
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", f"{PG}/{db}"], check=True,
                       capture_output=True, timeout=300)
        sel = subprocess.run(["pgbench", "-S", "-c", "4", "-j", "2", "-T", str(seconds),
                              f"{PG}/{db}"], capture_output=True, text=True, timeout=seconds + 60)
        psql(db, "CREATE TABLE ins (id BIGSERIAL PRIMARY KEY, u VARCHAR(64), b BYTEA)")
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
            script.write("INSERT INTO ins (u, b) VALUES ('bob', '\\x68656c6c6f');\n")
        ins = subprocess.run(["pgbench", "-n", "-f", script.name, "-c", "4", "-j", "2",
                              "-T", str(seconds), f"{PG}/{db}"], capture_output=True, text=True,
                             timeout=seconds + 60)
        os.unlink(script.name)
        for name, run in (("pgbench -S (primary-key SELECT)", sel),
                          ("one-row INSERT, autocommit", ins)):
            tps = [ln for ln in run.stdout.splitlines() if ln.startswith("tps")]
            print(f"  {name}: {tps[0] if tps else run.stderr.strip()[-200:]}")
    finally:
        psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=6000, help="MESSAGEs per generator")
    ap.add_argument("--rate", type=int, default=600, help="per generator, per second")
    ap.add_argument("--deliver", type=int, default=2000)
    ap.add_argument("--pgbench", type=int, default=15, help="seconds per pgbench run")
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp not found")
    db = f"sipsilo_cluster_{secrets.token_hex(4)}"
    url = f"{PG}/{db}"
    secret = secrets.token_hex(32) + "\n"
    psql("postgres", f"CREATE DATABASE {db}")
    started: list[Instance] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            print(f"one PostgreSQL ({PG}), {os.cpu_count()} CPUs, shared with other work")
            one = Instance(root, "one", url, secret)
            started.append(one)
            one.wait_up()
            measure(db, [one], args.count, args.rate, "a")
            deliver(db, one, args.deliver)
            more = [Instance(root, f"n{i}", url, secret) for i in range(2)]
            started.extend(more)
            for inst in more:
                inst.wait_up()
            psql(db, "DELETE FROM silo")
            measure(db, [one, *more], args.count, args.rate, "b")
            for inst in started:
                inst.stop()
            started.clear()
        print("PostgreSQL alone:")
        pgbench(args.pgbench)
    finally:
        for inst in started:
            inst.stop()
        psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

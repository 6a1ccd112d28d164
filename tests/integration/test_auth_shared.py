"""Issue 11 / issue 16: digest replay and failure blocking shared across instances.

Two real ``sipsilo serve`` processes serve one domain from one subscriber table with one
nonce secret (as instances behind one DNS name do). An attacker who captured bob's
REGISTER at A replays it at B; a guesser spreads his guesses over A and B. With
``[cluster] redis_url`` both instances keep that state in one Redis: the replay is
refused at B, and the guesses draw from one budget. A Redis outage must not open the
server: a right password is then answered like a wrong one (the challenge again), with
one log line and no traceback, and authentication works again once Redis is back.

Each test uses a key prefix of its own on the shared Redis and deletes its keys after.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sipsilo.sip.digest import Credentials, ha1, parse_challenge, request_digest
from tests.integration.harness import ServerProcess, free_port
from tests.integration.test_auth import Client, add_user, status

Make = Callable[..., ServerProcess]
DOMAIN = "sipsilo.test"
REDIS = "redis://127.0.0.1:6379/0"


def redis_up(port: int = 6379) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys deleted after."""
    if not redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379 (scripts/services.sh starts it)")
    redis = pytest.importorskip("redis")
    name = f"sipsilo-test-{uuid.uuid4().hex[:12]}:"
    yield name
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        keys = list(client.scan_iter(match=name + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class Phone:
    """bob's REGISTERs over UDP to whichever instance, for the one domain."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)
        self.port = self.sock.getsockname()[1]
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def register(self, server: ServerProcess, auth: str | None = None) -> str:
        self.seq += 1
        lines = [f"REGISTER sip:{DOMAIN} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-sh{time.time_ns()}",
                 "Max-Forwards: 70", f"From: <sip:bob@{DOMAIN}>;tag=t{self.port}",
                 f"To: <sip:bob@{DOMAIN}>", f"Call-ID: shared-{self.port}",
                 f"CSeq: {self.seq} REGISTER", f"Contact: <sip:bob@127.0.0.1:{self.port}>",
                 "Expires: 300"]
        if auth:
            lines.append(f"Authorization: {auth}")
        lines.append("Content-Length: 0")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), ("127.0.0.1", server.port))
        while True:
            reply = self.sock.recv(65535).decode()
            if not reply.startswith("SIP/2.0 1"):
                return reply

    @staticmethod
    def credentials(challenge: str, password: str, nc: int = 1) -> str:
        values = [ln.split(":", 1)[1].strip() for ln in challenge.split("\r\n")
                  if ln.lower().startswith("www-authenticate:")]
        assert values, challenge
        ch = next(c for c in map(parse_challenge, values) if c.algorithm == "MD5")
        uri = f"sip:{DOMAIN}"
        resp = request_digest("MD5", ha1("MD5", "bob", ch.realm, password), ch.nonce,
                              "REGISTER", uri, qop="auth", nc=f"{nc:08x}", cnonce="c0ffee")
        return Credentials("bob", ch.realm, ch.nonce, uri, resp, "MD5", "auth", f"{nc:08x}",
                           "c0ffee").to_header()

    def login(self, server: ServerProcess, password: str) -> str:
        """A fresh challenge from *server*, answered with *password*: the final reply."""
        return self.register(server, self.credentials(self.register(server), password))


def pair(make_server: Make, tmp_path: Path, count: int = 2, **settings: Any
         ) -> list[ServerProcess]:
    """*count* instances of one domain: one SQLite subscriber table, one nonce secret."""
    db = tmp_path / "shared.db"
    url = f"sqlite:///{db}"
    secret = secrets.token_hex(32) + "\n"
    dirs = [tmp_path / f"inst{i}" for i in range(count)]
    for d in dirs:
        d.mkdir()
        (d / "auth.secret").write_text(secret)
        (d / "auth.secret").chmod(0o600)
    add_user(dirs[0], f"bob@{DOMAIN}", "secret", f"msilo.db_url={url}",
             f"auth.realm={DOMAIN}")
    common = {"msilo.db_url": url, "auth.realm": DOMAIN, "server.domains": [DOMAIN],
              "auth.enabled": True, **settings}
    return [make_server(data_dir=d, **common) for d in dirs]


def test_a_nonce_count_used_at_one_instance_is_refused_at_another(
        make_server: Make, tmp_path: Path, prefix: str) -> None:
    a, b = pair(make_server, tmp_path, **{"cluster.redis_url": REDIS,
                                          "cluster.redis_prefix": prefix})
    phone = Phone()
    try:
        challenge = phone.register(a)
        captured = phone.credentials(challenge, "secret", nc=1)
        assert status(phone.register(a, captured)) == 200
        replayed = phone.register(b, captured)      # the same nonce and nc, at B
        assert status(replayed) == 401, replayed
        assert status(phone.register(a, captured)) == 401  # and at A, as before
        # the nonce is still good at B with a higher nc: the state is shared, not lost
        assert status(phone.register(b, phone.credentials(challenge, "secret", nc=2))) == 200
    finally:
        phone.close()
    assert "replayed nonce" in b.log()


def test_failures_at_two_instances_draw_from_one_budget(
        make_server: Make, tmp_path: Path, prefix: str) -> None:
    a, b = pair(make_server, tmp_path, **{"cluster.redis_url": REDIS,
                                          "cluster.redis_prefix": prefix,
                                          "auth.max_failures": 4, "auth.block_time": 60})
    phone = Phone()
    try:
        for server in (a, b, a, b):                 # four guesses, two at each
            assert status(phone.login(server, "guess")) == 401
        for server in (b, a):                       # the budget of 4 is spent at both
            blocked = phone.login(server, "secret")
            assert status(blocked) == 403 and "too many failed attempts" in blocked, blocked
    finally:
        phone.close()


def private_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not redis_up(port):
        assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    return proc


def test_a_redis_outage_refuses_logins_with_one_log_line_and_recovers(
        make_server: Make, tmp_path: Path) -> None:
    port = free_port()
    redis = private_redis(port, tmp_path)
    try:
        (server,) = pair(make_server, tmp_path, count=1, **{
            "cluster.redis_url": f"redis://127.0.0.1:{port}/0"})
        phone = Phone()
        try:
            assert status(phone.login(server, "secret")) == 200
            redis.terminate()
            redis.wait(10)
            wrong = phone.login(server, "guess")
            for _ in range(3):                      # closed: right answered as wrong
                right = phone.login(server, "secret")
                assert status(right) == 401, right
                assert "stale=true" not in right.lower()
            assert status(wrong) == 401
            log = server.log()
            assert "Traceback" not in log
            assert log.count("shared authentication state unavailable") == 1, log[-3000:]
            redis = private_redis(port, tmp_path)
            deadline = time.monotonic() + 10
            while status(phone.login(server, "secret")) != 200:
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.2)
            assert "shared authentication state reachable again" in server.log()
        finally:
            phone.close()
    finally:
        if redis.poll() is None:
            redis.terminate()
            redis.wait(10)


# With [server] workers = 2 a request goes to the worker of its *target* user
# (workers.keys): bob's MESSAGEs to carol reach worker 1, those to dave worker 0
# (see test_workers.py). bob's guesses as the sender spread over both.
CAROL, DAVE = "carol", "dave"


def two_workers(make_server: Make, tmp_path: Path, **settings: Any) -> ServerProcess:
    data = tmp_path / "workers"
    add_user(data, "bob@127.0.0.1", "secret")
    port = free_port()
    return make_server(data_dir=data, port=port, **{
        "server.workers": 2, "server.listen": [f"udp:127.0.0.1:{port}"],
        "auth.enabled": True, **settings})


def message(c: Client, to: str, password: str | None, nc: int = 1,
            challenge: str | None = None) -> str:
    """bob's MESSAGE to *to*: answered with *password* (a fresh challenge unless given)."""
    if password is None:
        return c.send("MESSAGE", "bob", to=to, body="hi", call_id=f"w-{to}-{c.seq}")
    challenge = challenge or message(c, to, None)
    assert status(challenge) == 407, challenge
    auth = c.credentials(challenge, "MESSAGE", "bob", password, nc=nc, to=to)
    return c.send("MESSAGE", "bob", to=to, auth=auth, body="hi", call_id=f"w-{to}-{c.seq}")


def test_workers_without_redis_share_one_failure_budget(
        make_server: Make, tmp_path: Path) -> None:
    assert zlib.crc32(CAROL.encode()) % 2 != zlib.crc32(DAVE.encode()) % 2
    server = two_workers(make_server, tmp_path, **{"auth.max_failures": 4})
    c = Client(server)
    try:
        for to in (CAROL, DAVE, CAROL, DAVE):       # two guesses at each worker
            assert status(message(c, to, "guess")) == 407
        for to in (CAROL, DAVE):
            blocked = message(c, to, "secret")
            assert status(blocked) == 403 and "too many failed attempts" in blocked, blocked
    finally:
        c.close()


def test_workers_without_redis_share_the_nonce_counts(
        make_server: Make, tmp_path: Path) -> None:
    server = two_workers(make_server, tmp_path)
    c = Client(server)
    try:
        challenge = message(c, CAROL, None)         # a nonce of worker 1's
        assert status(message(c, DAVE, "secret", nc=1, challenge=challenge)) == 202
        again = message(c, CAROL, "secret", nc=1, challenge=challenge)   # nc 1 again
        assert status(again) == 407 and "stale=true" in again.lower(), again
        assert status(message(c, CAROL, "secret", nc=2, challenge=challenge)) == 202
    finally:
        c.close()

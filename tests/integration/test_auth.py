"""Digest authentication end to end: SIPp's [authentication], sipsak, raw sockets, svwar.

These servers run with the default [auth] algorithms (MD5 only: SIPp 3.6 and sipsak
0.9.8 compute MD5 only, see test_auth_clients.py). The SHA-256 path is covered by the
unit tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sipsilo.sip.digest import Credentials, ha1, parse_challenge, request_digest
from tests.integration.harness import ServerProcess, run_sipp

Make = Callable[..., ServerProcess]
HOST = "127.0.0.1"
#: settings these servers add to the defaults: none, the defaults must serve the clients
COMPAT: dict[str, Any] = {}


def add_user(data_dir: Path, aor: str, password: str, *sets: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [f"--set={s}" for s in sets]
    proc = subprocess.run(
        [sys.executable, "-m", "sipsilo", "user", "add", aor, "--password-stdin",
         "--data-dir", str(data_dir), *args],
        input=password + "\n", capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert password not in proc.stdout + proc.stderr


def auth_server(make_server: Make, tmp_path: Path, **settings: Any) -> ServerProcess:
    data = tmp_path / "auth"
    add_user(data, f"bob@{HOST}", "secret")
    add_user(data, f"alice@{HOST}", "alicepw")
    return make_server(data_dir=data, **{**COMPAT, **settings})


class Client:
    """A UDP SIP client on a raw socket (to resend exactly what it wants)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(3)
        self.port = self.sock.getsockname()[1]
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, user: str, *, to: str | None = None, auth: str | None = None,
             body: str = "", call_id: str = "raw-1") -> str:
        self.seq += 1
        srv = self.server.uri_host
        ruri = f"sip:{srv}" if method == "REGISTER" else f"sip:{to}@{srv}"
        to_user = user if method == "REGISTER" else to
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK-raw{time.time_ns()}",
                 "Max-Forwards: 70", f"From: <sip:{user}@{srv}>;tag=t{self.port}",
                 f"To: <sip:{to_user}@{srv}>", f"Call-ID: {call_id}",
                 f"CSeq: {self.seq} {method}", f"Contact: <sip:{user}@{HOST}:{self.port}>"]
        if method == "REGISTER":
            lines.append("Expires: 300")
        if auth:
            name = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
            lines.append(f"{name}: {auth}")
        if body:
            lines.append("Content-Type: text/plain")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(),
                         (HOST, self.server.port))
        while True:
            reply = self.sock.recv(65535).decode()
            if not reply.startswith("SIP/2.0 1"):
                return reply

    def credentials(self, reply: str, method: str, user: str, password: str,
                    nc: int = 1, to: str | None = None) -> str:
        name = "WWW-Authenticate" if method == "REGISTER" else "Proxy-Authenticate"
        values = [ln.split(":", 1)[1].strip() for ln in reply.split("\r\n")
                  if ln.lower().startswith(name.lower() + ":")]
        ch = next(c for c in map(parse_challenge, values) if c.algorithm == "MD5")
        srv = self.server.uri_host
        uri = f"sip:{srv}" if method == "REGISTER" else f"sip:{to}@{srv}"
        resp = request_digest("MD5", ha1("MD5", user, ch.realm, password), ch.nonce, method,
                              uri, qop="auth", nc=f"{nc:08x}", cnonce="c0ffee")
        return Credentials(user, ch.realm, ch.nonce, uri, resp, "MD5", "auth", f"{nc:08x}",
                           "c0ffee").to_header()


def status(reply: str) -> int:
    return int(reply.split(" ", 2)[1])


def store_for_bob(server: ServerProcess, text: str) -> None:
    """A MESSAGE from a foreign sender (no challenge: we cannot authenticate them)."""
    c = Client(server)
    try:
        lines = [f"MESSAGE sip:bob@{server.uri_host} SIP/2.0",
                 f"Via: SIP/2.0/UDP {HOST}:{c.port};branch=z9hG4bK-st{time.time_ns()}",
                 "Max-Forwards: 70", "From: <sip:carol@remote.invalid>;tag=x",
                 f"To: <sip:bob@{server.uri_host}>", "Call-ID: store-1", "CSeq: 1 MESSAGE",
                 "Content-Type: text/plain", f"Content-Length: {len(text)}"]
        c.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + text).encode(), (HOST, server.port))
        reply = c.sock.recv(65535).decode()
        assert status(reply) == 202, reply
    finally:
        c.close()


def sipp_register(server: ServerProcess, aor_user: str, user: str, password: str, expect: int,
                  contact_port: int = 9) -> Any:
    return run_sipp("auth_register", server,
                    keys={"aor_user": aor_user, "contact_port": contact_port},
                    extra=["-au", user, "-ap", password], subst={"expect": expect}, timeout=15)


def answer_one_message(sock: socket.socket) -> str:
    """Receive one request on sock and answer it 200; return it."""
    data, addr = sock.recvfrom(65535)
    text = data.decode(errors="replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    copy = [ln for ln in head[1:] if ln.split(":", 1)[0].lower() in
            ("via", "from", "to", "call-id", "cseq")]
    reply = "SIP/2.0 200 OK\r\n" + "\r\n".join(copy) + "\r\nContent-Length: 0\r\n\r\n"
    sock.sendto(reply.encode(), addr)
    return text


def test_auth_off_without_users_is_announced(server: ServerProcess) -> None:
    assert "authentication is OFF: anyone can register as any user" in server.log()


def test_right_password_registers_and_dumps(make_server: Make, tmp_path: Path) -> None:
    server = auth_server(make_server, tmp_path)
    store_for_bob(server, "hello bob")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
        ua.bind((HOST, 0))
        ua.settimeout(5)
        result = sipp_register(server, "bob", "bob", "secret", 200, ua.getsockname()[1])
        assert result.returncode == 0, result.stdout + result.messages
        delivered = answer_one_message(ua)
    assert delivered.startswith("MESSAGE ") and "hello bob" in delivered
    assert "From: <sip:carol@remote.invalid>" in delivered
    deadline = time.monotonic() + 5
    while server.rows() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.rows() == []


def test_wrong_password_gets_401_again_and_no_dump(make_server: Make, tmp_path: Path) -> None:
    server = auth_server(make_server, tmp_path)
    store_for_bob(server, "not for eve")
    result = sipp_register(server, "bob", "bob", "guess", 401)
    assert result.returncode == 0, result.stdout + result.messages
    assert "REGISTER as bob@127.0.0.1 (wrong password)" in server.log()
    assert "from 127.0.0.1:" in server.log()
    time.sleep(0.5)
    assert len(server.rows()) == 1
    listing = server.cli("location", "list")
    assert listing.returncode == 0, listing.stderr
    assert "bob" not in listing.stdout  # no binding without an authenticated REGISTER


def test_bobs_credentials_for_alices_aor_are_challenged_again(
        make_server: Make, tmp_path: Path) -> None:
    # the answer of a wrong password: a 403 here would confirm bob's password
    server = auth_server(make_server, tmp_path)
    result = sipp_register(server, "alice", "bob", "secret", 401)
    assert result.returncode == 0, result.stdout + result.messages
    assert "is not yours" not in result.received()[-1]
    assert "authenticated as sip:bob@127.0.0.1 but claims sip:alice@127.0.0.1" in server.log()


def test_auto_turns_authentication_on_when_a_user_is_added(
        make_server: Make, tmp_path: Path) -> None:
    server = make_server(data_dir=tmp_path / "auto")
    assert "authentication is OFF" in server.log()
    c = Client(server)
    try:
        assert status(c.send("REGISTER", "bob", call_id="auto-0")) == 200  # open: no users
        added = server.cli("user", "add", f"bob@{HOST}", "--password-stdin", input="secret\n")
        assert added.returncode == 0, added.stderr
        assert "restart" not in added.stdout
        deadline = time.monotonic() + 5
        reply = ""
        while time.monotonic() < deadline:
            reply = c.send("REGISTER", "bob", call_id=f"auto-{c.seq}")
            if status(reply) != 200:
                break
            time.sleep(0.2)
        assert status(reply) == 401 and "WWW-Authenticate: Digest" in reply, reply
        creds = c.credentials(reply, "REGISTER", "bob", "secret")
        assert status(c.send("REGISTER", "bob", auth=creds, call_id=f"auto-{c.seq}")) == 200
    finally:
        c.close()
    assert "authentication turned on: the subscriber table has users" in server.log()


def test_unauthenticated_message_from_local_user_is_407_then_stored_as_identity(
        make_server: Make, tmp_path: Path) -> None:
    server = auth_server(make_server, tmp_path)
    c = Client(server)
    try:
        first = c.send("MESSAGE", "bob", to="alice", body="hi")
        assert status(first) == 407 and "Proxy-Authenticate: Digest" in first
        assert server.rows() == []
        creds = c.credentials(first, "MESSAGE", "bob", "secret", to="alice")
        ok = c.send("MESSAGE", "bob", to="alice", body="hi", auth=creds)
        assert status(ok) == 202, ok
        # the From carried our port; the row keeps the authenticated AoR
        assert [r["src_addr"] for r in server.rows()] == [f"sip:bob@{HOST}"]
        assert "Proxy-Authorization" not in (server.rows()[0]["extra_hdrs"] or "")
    finally:
        c.close()


def test_replayed_nonce_is_refused(make_server: Make, tmp_path: Path) -> None:
    server = auth_server(make_server, tmp_path)
    c = Client(server)
    try:
        challenge = c.send("REGISTER", "bob")
        assert status(challenge) == 401
        creds = c.credentials(challenge, "REGISTER", "bob", "secret")
        assert status(c.send("REGISTER", "bob", auth=creds)) == 200
        replay = c.send("REGISTER", "bob", auth=creds)  # same nonce, same nc, new branch
        assert status(replay) == 401 and "stale=true" in replay
        assert "replayed nonce" in server.log()
        nc2 = c.credentials(challenge, "REGISTER", "bob", "secret", nc=2)
        assert status(c.send("REGISTER", "bob", auth=nc2)) == 200
    finally:
        c.close()


def test_repeated_failures_block_the_source(make_server: Make, tmp_path: Path) -> None:
    server = auth_server(make_server, tmp_path, **{"auth.max_failures": 3,
                                                   "auth.block_time": 60})
    c = Client(server)
    try:
        challenge = c.send("REGISTER", "bob")
        good = c.credentials(challenge, "REGISTER", "bob", "secret")
        for i in range(3):
            reply = c.send("REGISTER", "bob",
                           auth=c.credentials(challenge, "REGISTER", "bob", f"guess{i}"))
            assert status(reply) == 401
        blocked = c.send("REGISTER", "bob", auth=good)  # even the right password
        assert status(blocked) == 403 and "too many failed attempts" in blocked
        # the block is per (address, username): no credentials, no user to block
        assert status(c.send("REGISTER", "bob")) == 401
        assert "source blocked for this user" in server.log()
    finally:
        c.close()


SIPSAK = shutil.which("sipsak")


@pytest.mark.skipif(SIPSAK is None, reason="sipsak not installed")
def test_sipsak_registers_through_the_challenge(make_server: Make, tmp_path: Path) -> None:
    # sipsak resolves the domain and mangles a port in it: use localhost plus -p.
    data = tmp_path / "sk"
    add_user(data, "bob@localhost", "secret", 'server.domains=["localhost"]')
    server = make_server(data_dir=data, **{"server.domains": ["localhost"], **COMPAT})

    def sipsak(password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SIPSAK or "sipsak", "-U", "-C", "empty", "-s", "sip:bob@localhost", "-p",
             f"{HOST}:{server.port}", "-a", password, "-u", "bob", "-vv"],
            capture_output=True, text=True, timeout=30)

    wrong = sipsak("nope")
    assert wrong.returncode != 0
    ok = sipsak("secret")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "wrong password" in server.log() and "REGISTER received" in server.log()


SVWAR = shutil.which("svwar")


@pytest.mark.skipif(SVWAR is None, reason="sipvicious not installed")
def test_svwar_cannot_tell_users_apart(make_server: Make, tmp_path: Path) -> None:
    server = auth_server(make_server, tmp_path)
    words = tmp_path / "words"
    words.write_text("bob\nalice\nnobody\nzz9\n")
    proc = subprocess.run(
        [SVWAR or "svwar", "-d", str(words), "-p", str(server.port), "-m", "REGISTER",
         f"--domain={HOST}", HOST],
        capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert "authentication request for an unknown extension" in out
    assert "found nothing" in out

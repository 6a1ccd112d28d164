"""Issue "Registrar/proxy" with real softphones: sipsak and a headless baresip.

sipsak 0.9.8.1 cuts a five-digit port in the URIs it builds (39217 becomes
3921), so these servers listen on a four-digit port. Its MESSAGE mode (-M)
crashes before sending anything (NULL sprintf buffer), so the MESSAGE is sent
with sipsak's file mode (-f), which sends the request as written.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ServerProcess, SippResult, free_port, run_sipp
from tests.integration.proxy_helpers import Sipp, wait_registered
from tests.integration.sipwire import header, status_line, traced

SIPSAK = shutil.which("sipsak")
BARESIP = shutil.which("baresip")
BARESIP_MODULES = Path("/usr/lib/baresip/modules")


def four_digit_port() -> int:
    return free_port(low=2000, high=9999)


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server(port=four_digit_port())


def sipsak(*args: str) -> subprocess.CompletedProcess[str]:
    assert SIPSAK, "sipsak is not installed (Debian package sipsak)"
    return subprocess.run([SIPSAK, *args], capture_output=True, text=True, timeout=15)


def sipsak_message(server: ServerProcess, tmp_path: Path, to: str, text: str) -> str:
    """Send a MESSAGE with sipsak's file mode; sipsak's verbose output."""
    host = server.uri_host
    request = (
        f"MESSAGE sip:{to}@{host} SIP/2.0\r\n"
        f"From: <sip:alice@{host}>;tag=sipsak-{random.randint(1, 10**9)}\r\n"
        f"To: <sip:{to}@{host}>\r\n"
        f"Call-ID: sipsak-{random.randint(1, 10**9)}@127.0.0.1\r\n"
        "CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(text)}\r\n\r\n{text}"
    )
    path = tmp_path / "sipsak-message.txt"
    path.write_text(request)
    done = sipsak("-f", str(path), "-s", f"sip:{to}@{host}", "-vv")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_sipsak_registers_and_its_message_reaches_bob(
    server: ServerProcess, tmp_path: Path
) -> None:
    bob_port = free_port({server.port})
    bob = Sipp("uas_message", server, bob_port, timeout=10, subst={"reply": "200 OK"})
    registered = sipsak("-U", "-C", f"sip:bob@127.0.0.1:{bob_port}", "-x", "300", "-i",
                        "-s", f"sip:bob@{server.uri_host}")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    listing = server.cli("location", "list").stdout
    assert f"sip:bob@127.0.0.1:{bob_port}" in listing and "sipsak" in listing, listing
    output = sipsak_message(server, tmp_path, "bob", "hello bob from sipsak")
    assert "SIP/2.0 200 OK" in output, output
    bob_run = bob.finish()
    assert bob_run.returncode == 0, bob_run.stdout
    message = next(m for m in traced(bob_run.messages) if m.startswith("MESSAGE "))
    assert message.rstrip().endswith("hello bob from sipsak")
    assert server.rows() == []


def test_sipsak_message_for_offline_user_is_stored(server: ServerProcess, tmp_path: Path) -> None:
    output = sipsak_message(server, tmp_path, "carol", "for carol later")
    assert "SIP/2.0 202 Accepted" in output, output
    rows = server.rows()
    assert [(r["username"], bytes(r["body"])) for r in rows] == [("carol", b"for carol later")]


class Baresip:
    """A headless baresip: account alice, no audio, driven over ctrl_tcp (netstring JSON)."""

    def __init__(self, config_dir: Path, server: ServerProcess, contacts: list[str],
                 password: str = "unused") -> None:
        self.sip_port = free_port({server.port})
        self.ctrl_port = free_port({server.port, self.sip_port, self.sip_port + 1})
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "config").write_text(
            f"sip_listen\t127.0.0.1:{self.sip_port}\n"
            f"module_path\t{BARESIP_MODULES}\n"
            "module_app\taccount.so\nmodule_app\tcontact.so\nmodule_app\tmenu.so\n"
            "module_app\tctrl_tcp.so\n"
            f"ctrl_tcp_listen\t127.0.0.1:{self.ctrl_port}\n"
            "sip_trans_def\tudp\n"
        )
        (config_dir / "accounts").write_text(
            f"<sip:alice@{server.uri_host}>;regint=60;auth_pass={password}\n"
        )
        (config_dir / "contacts").write_text("".join(f"<{c}>\n" for c in contacts))
        self.log_path = config_dir / "baresip.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(BARESIP), "-f", str(config_dir)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.ctrl = self._connect()

    def _connect(self, timeout: float = 5.0) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=2)
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"baresip ctrl_tcp not up: {self.log()}") from None
                time.sleep(0.05)

    def command(self, command: str, params: str = "") -> dict[str, object]:
        payload = json.dumps({"command": command, "params": params, "token": command}).encode()
        self.ctrl.sendall(str(len(payload)).encode() + b":" + payload + b",")
        data = b""
        while not data.endswith(b","):
            chunk = self.ctrl.recv(65535)
            assert chunk, "baresip closed ctrl_tcp"
            data += chunk
        answer: dict[str, object] = json.loads(data[data.index(b":") + 1 : -1])
        return answer

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.ctrl.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def baresip(server: ServerProcess, tmp_path: Path) -> Iterator[Baresip]:
    if not BARESIP:
        pytest.skip("baresip is not installed (Debian package baresip-core)")
    phone = Baresip(tmp_path / "baresip", server, [f"sip:carol@{server.uri_host}"])
    yield phone
    phone.stop()


def test_baresip_registers_sends_and_receives_message(
    server: ServerProcess, baresip: Baresip
) -> None:
    wait_registered(server, f"@127.0.0.1:{baresip.sip_port}")
    listing = server.cli("location", "list").stdout
    assert "sip:alice@127.0.0.1" in listing and "baresip" in listing, listing

    # alice (baresip) -> carol, who is offline: stored.
    answer = baresip.command("message", "hi carol from baresip")
    assert answer.get("ok") is True, answer
    deadline = time.monotonic() + 5
    while not server.rows() and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = server.rows()
    assert [(r["username"], bytes(r["body"])) for r in rows] == [
        ("carol", b"hi carol from baresip")
    ], baresip.log()
    assert rows[0]["src_addr"] == f"sip:alice@{server.uri_host}"

    # dave (SIPp) -> alice: relayed to baresip, which answers 200.
    result = run_sipp("uac_message", server, timeout=5, subst={"expect": 200},
                      keys={"ruser": "alice", "from_user": "dave", "text": "hello baresip",
                            "max_forwards": 70})
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.stdout + baresip.log()
    reply = traced(result.messages)[-1]
    assert status_line(reply) == "SIP/2.0 200 OK"
    assert "baresip" in (header(reply, "User-Agent") or header(reply, "Server") or ""), reply

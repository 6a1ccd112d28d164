"""`sipsilo send` and `sipsilo register` against a real server over UDP and TCP, and
the texts a user reads from a server: a port already in use, the route's log lines."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ServerProcess, free_port
from tests.integration.silo_helpers import register, start_ua, wait_for
from tests.integration.test_auth import auth_server

ALICE = "alice@127.0.0.1"
BOB = "bob@127.0.0.1"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def send(server: ServerProcess, transport: str, *args: str,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    return server.cli("send", "-t", transport, "--from", ALICE, *args, input=input)


def start_phone(server: ServerProcess, transport: str, seconds: float) -> subprocess.Popen[str]:
    """`sipsilo register` in the background, once it says it is registered."""
    config = server.data_dir / "sipsilo.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipsilo", "register", "-t", transport, BOB, "--for",
         str(seconds), "--config", str(config), "--data-dir", str(server.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert first.startswith(f"registered sip:{BOB} at "), first + proc.stderr.read()
    return proc


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_send_stores_for_an_offline_user_and_register_receives_it(
    server: ServerProcess, transport: str
) -> None:
    assert ok(send(server, transport, "--to", BOB, "Hi Bob")) == "202 Accepted\n"
    assert ok(send(server, transport, "--to", f"sip:{BOB}", "--content-type", "application/json",
                   input='{"a": 1}')) == "202 Accepted\n"
    assert "Hi Bob" in ok(server.cli("silo", "list"))

    out = ok(server.cli("register", "-t", transport, BOB, "--for", "2")).splitlines()
    param = "" if transport == "udp" else ";transport=tcp"
    assert re.fullmatch(rf"registered sip:{BOB} at sip:bob@127\.0\.0\.1:\d+{param} for 60 s;"
                        r" waiting 2 s for messages", out[0]), out
    assert re.fullmatch(rf"message from sip:{ALICE}: \[Offline message - .+\] Hi Bob",
                        out[1]), out
    assert out[2:] == [f"message from sip:{ALICE}: (application/json, 8 bytes)",
                       f"unregistered sip:{BOB} (2 messages received)"]
    assert ok(server.cli("silo", "list")) == "no messages waiting\n"
    assert ok(server.cli("location", "list")) == "no registrations\n"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_send_to_a_registered_phone_gets_its_answer(server: ServerProcess, transport: str) -> None:
    phone = start_phone(server, transport, 3)
    try:
        assert ok(send(server, transport, "--to", BOB, "live")) == "200 OK\n"
    finally:
        out, err = phone.communicate(timeout=20)
    assert phone.returncode == 0, err
    assert out.splitlines() == [f"message from sip:{ALICE}: live",
                                f"unregistered sip:{BOB} (1 message received)"]


def test_send_prints_a_refusal_and_exits_1(server: ServerProcess) -> None:
    result = send(server, "udp", "--to", "bob@elsewhere.example", "--server",
                  f"localhost:{server.port}", "hi")
    assert (result.returncode, result.stdout, result.stderr) == (1, "403 Relaying denied\n", "")


def test_send_to_no_server_says_so_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    base = [sys.executable, "-m", "sipsilo", "send", "--from", ALICE, "--to", BOB,
            "--server", f"127.0.0.1:{port}", "--data-dir", str(tmp_path), "hi"]
    tcp = subprocess.run([*base, "-t", "tcp"], capture_output=True, text=True, timeout=30)
    assert (tcp.returncode, tcp.stdout, tcp.stderr) == (
        1, "", f"sipsilo: error: cannot reach the server at tcp:127.0.0.1:{port}:"
               " connection refused (is it running?)\n")
    udp = subprocess.run([*base, "--set", "tm.fr_timer=1"], capture_output=True, text=True,
                         timeout=30)
    assert (udp.returncode, udp.stdout, udp.stderr) == (
        1, "", f"sipsilo: error: no answer from the server at udp:127.0.0.1:{port}"
               " within 3 s (is it running?)\n")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_send_and_register_answer_digest_challenges(
    make_server: Callable[..., ServerProcess], tmp_path: Path, transport: str
) -> None:
    server = auth_server(make_server, tmp_path)
    result = send(server, transport, "--to", BOB, "no password")
    assert (result.returncode, result.stdout) == (1, "407 Proxy Authentication Required\n")
    assert ok(send(server, transport, "--password-stdin", "--to", BOB, "signed",
                   input="alicepw\n")) == "202 Accepted\n"
    result = server.cli("register", "-t", transport, BOB, "--for", "0")
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", "sipsilo: error: registration refused: 401 Unauthorized (authentication is on:"
               " give the password with --password-stdin)\n")
    out = ok(server.cli("register", "-t", transport, "--password-stdin", BOB, "--for", "1",
                        input="secret\n")).splitlines()
    assert out[1:] and out[1].endswith("] signed"), out
    assert out[-1] == f"unregistered sip:{BOB} (1 message received)"


# --- what the server says --------------------------------------------------------


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_port_in_use_names_transport_address_and_what_to_change(
    make_server: Callable[..., ServerProcess], tmp_path: Path, proto: str
) -> None:
    port = free_port()
    make_server(port=port, **{"server.listen": [f"{proto}:127.0.0.1:{port}"]})
    listen = f"{proto}:127.0.0.1:{port}"
    result = subprocess.run(
        [sys.executable, "-m", "sipsilo", "serve", "--set", f"server.listen={listen}",
         "--data-dir", str(tmp_path / "second")],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"sipsilo: error: cannot listen on {listen}: address already in use: another server"
        " (another sipsilo?) is using it; stop that one, or give server.listen another port"
        f' (e.g. "{proto}:127.0.0.1:{port + 10}")')
    assert "Traceback" not in result.stderr


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP port where something is bound but never answers (a phone gone mute)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_log_lines_tell_timeout_from_refusal(
    make_server: Callable[..., ServerProcess], silent_port: int
) -> None:
    server = make_server(**{"tm.fr_timer": 1})
    assert ok(send(server, "udp", "--to", BOB, "offline")) == "202 Accepted\n"
    wait_for(lambda: re.search(r"stored message \d+ for bob@127\.0\.0\.1 from ", server.log()))

    # a phone that takes too long: the delivery and then the relay time out
    register(server, silent_port, expires=60)
    wait_for(lambda: re.search(r"delivery of message \d+ failed: sip:bob@127\.0\.0\.1:"
                               rf"{silent_port} did not answer in time \(timeout\), a temporary"
                               " failure", server.log()))
    ok(server.cli("silo", "purge", "--all"))
    assert ok(send(server, "udp", "--to", BOB, "mute")) == "202 Accepted\n"
    wait_for(lambda: ("recipient's phone did not answer in time (timeout): message stored for"
                      " the next REGISTER (202)") in server.log())

    # a phone that refuses MESSAGE (carol's: bob's mute one would time out beside it)
    ua = start_ua(server, code=415, reason="Unsupported Media Type")
    register(server, ua.port, user="carol", expires=60)
    assert ok(send(server, "udp", "--to", "carol@127.0.0.1", "refused")) == "202 Accepted\n"
    ua.finish(timeout=15)
    wait_for(lambda: ("recipient's phone refused it with 415 Unsupported Media Type: message"
                      " stored for the next REGISTER (202)") in server.log())
    assert "MSILO" not in server.log()

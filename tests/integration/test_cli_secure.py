"""`sipsilo send` and `sipsilo register` over TLS, WS and WSS against a real server.

The server listens on udp, tls, ws and wss with a certificate made for the test
(test_secure_transports.secure_settings); the CLI verifies it with `--ca`. The
failures a user meets first (no CA, the wrong CA, nothing listening, a refused
WebSocket origin) must each read as one `sipsilo: error:` line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ServerProcess, free_port
from tests.integration.secure_clients import make_certs
from tests.integration.test_secure_transports import Secure, secure_settings

pytestmark = pytest.mark.integration

ALICE = "alice@127.0.0.1"
BOB = "bob@127.0.0.1"


@pytest.fixture
def start(make_server: Callable[..., ServerProcess], tmp_path: Path) -> Callable[..., Secure]:
    """Start the server with udp, tls, ws and wss listeners (and extra settings)."""

    def go(**extra: Any) -> Secure:
        settings, ports, certs = secure_settings(tmp_path / "server", **extra)
        server = make_server(data_dir=tmp_path / "server", port=ports["udp"], **settings)
        return Secure(server, ports, certs)

    return go


@pytest.fixture
def secure(start: Callable[..., Secure]) -> Secure:
    return start()


def run(secure: Secure, command: str, transport: str, *args: str,
        ca: bool = True) -> subprocess.CompletedProcess[str]:
    """`sipsilo COMMAND -t TRANSPORT` against the test server (its listen address)."""
    extra = ["--ca", str(secure.certs.ca)] if ca and transport in ("tls", "wss") else []
    return secure.server.cli(command, "-t", transport, *extra, *args)


def send(secure: Secure, transport: str, text: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run(secure, "send", transport, "--from", ALICE, "--to", BOB, text, **kw)


def one_error(result: subprocess.CompletedProcess[str], line: str, code: int = 1) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (code, "", line + "\n")


def phone(secure: Secure, transport: str, seconds: float) -> subprocess.Popen[str]:
    """`sipsilo register` in the background, once it says it is registered."""
    server = secure.server
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipsilo", "register", "-t", transport, "--ca",
         str(secure.certs.ca), BOB, "--for", str(seconds),
         "--config", str(server.data_dir / "sipsilo.toml"), "--data-dir", str(server.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert first.startswith(f"registered sip:{BOB} at "), first + proc.stderr.read()
    proc.first_line = first  # type: ignore[attr-defined]
    return proc


@pytest.mark.parametrize("transport", ["tls", "ws", "wss"])
def test_send_stores_over_each_secure_transport(secure: Secure, transport: str) -> None:
    result = send(secure, transport, f"over {transport}")
    assert (result.returncode, result.stdout, result.stderr) == (0, "202 Accepted\n", "")
    [row] = secure.server.rows()
    assert row["body"].decode().endswith(f"over {transport}")


@pytest.mark.parametrize("transport", ["tls", "wss"])
def test_register_over_tls_gets_stored_then_live_messages(secure: Secure,
                                                          transport: str) -> None:
    assert send(secure, "udp", "stored first").stdout == "202 Accepted\n"
    bob = phone(secure, transport, 4)
    try:
        first: str = bob.first_line  # type: ignore[attr-defined]
        host = r"\w+\.invalid" if transport == "wss" else r"127\.0\.0\.1:\d+"
        assert re.fullmatch(rf"registered sip:{BOB} at sip:bob@{host};transport={transport}"
                            r" for 60 s; waiting 4 s for messages\n", first), first
        locations = secure.server.cli("location", "list").stdout
        assert f";transport={transport}" in locations, locations
        # A WebSocket phone has no address the server could open a connection to:
        # this 200 can only come back over the connection it registered on.
        live = send(secure, "ws", "live over ws")
        assert (live.returncode, live.stdout) == (0, "200 OK\n"), live.stderr
    finally:
        out, err = bob.communicate(timeout=30)
    assert bob.returncode == 0, err
    lines = out.splitlines()
    assert re.fullmatch(rf"message from sip:{ALICE}: \[Offline message - .+\] stored first",
                        lines[0]), lines
    assert lines[1:] == [f"message from sip:{ALICE}: live over ws",
                         f"unregistered sip:{BOB} (2 messages received)"]
    assert not secure.server.rows()


def test_tls_without_the_ca_is_one_line_naming_the_fix(secure: Secure) -> None:
    port = secure.ports["tls"]
    one_error(send(secure, "tls", "hi", ca=False),
              f"sipsilo: error: no tls connection to the server at tls:127.0.0.1:{port}:"
              " TLS handshake failed: unable to get local issuer certificate"
              " (give the CA that signed the server's certificate with --ca FILE)")
    assert not secure.server.rows()


def test_wss_with_the_wrong_ca_is_refused(secure: Secure, tmp_path: Path) -> None:
    other = make_certs(tmp_path / "other")
    port = secure.ports["wss"]
    result = secure.server.cli("send", "-t", "wss", "--ca", str(other.ca), "--from", ALICE,
                               "--to", BOB, "hi")
    one_error(result, f"sipsilo: error: no wss connection to the server at wss:127.0.0.1:{port}:"
                      " TLS handshake failed: unable to get local issuer certificate"
                      " (give the CA that signed the server's certificate with --ca FILE)")


def test_a_certificate_for_another_name_is_refused(make_server: Callable[..., ServerProcess],
                                                   tmp_path: Path) -> None:
    data_dir = tmp_path / "named"
    settings, ports, _ = secure_settings(data_dir)
    certs = make_certs(data_dir, names=("sip.example.com",))  # replaces the 127.0.0.1 one
    server = make_server(data_dir=data_dir, port=ports["udp"], **settings)
    result = server.cli("send", "-t", "tls", "--ca", str(certs.ca), "--from", ALICE,
                        "--to", BOB, "hi")
    port = ports["tls"]
    # A name mismatch is not fixed with --ca: no hint to give one.
    one_error(result, f"sipsilo: error: no tls connection to the server at tls:127.0.0.1:{port}:"
                      " TLS handshake failed: IP address mismatch, certificate is not valid for"
                      " '127.0.0.1'.")


def test_insecure_skips_verification_and_says_so(secure: Secure) -> None:
    result = send(secure, "tls", "unverified", ca=False)
    assert result.returncode == 1
    result = secure.server.cli("send", "-t", "tls", "--insecure", "--from", ALICE, "--to", BOB,
                               "unverified")
    assert (result.returncode, result.stdout) == (0, "202 Accepted\n")
    assert result.stderr == ("sipsilo: warning: --insecure: the server's certificate is not"
                             " verified; anyone on the path can read and change this traffic\n")


def test_nothing_listening_and_bad_options_are_one_line(secure: Secure, tmp_path: Path) -> None:
    port = free_port(set(secure.ports.values()))
    result = secure.server.cli("send", "-t", "wss", "--ca", str(secure.certs.ca), "--server",
                               f"127.0.0.1:{port}", "--from", ALICE, "--to", BOB, "hi")
    one_error(result, f"sipsilo: error: cannot reach the server at wss:127.0.0.1:{port}:"
                      " connection refused (is it running?)")
    missing = tmp_path / "nope.pem"
    one_error(secure.server.cli("send", "-t", "tls", "--ca", str(missing), "--from", ALICE,
                                "--to", BOB, "hi"),
        f"sipsilo: error: --ca {missing}: cannot read it: no such file or directory"
        " (see 'python -m sipsilo send --help')", code=2)
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    one_error(secure.server.cli("send", "-t", "tls", "--ca", str(not_pem), "--from", ALICE,
                                "--to", BOB, "hi"),
              f"sipsilo: error: --ca {not_pem}: no CA certificate in it (expected PEM,"
              " -----BEGIN CERTIFICATE-----) (see 'python -m sipsilo send --help')", code=2)
    one_error(secure.server.cli("send", "-t", "udp", "--insecure", "--from", ALICE,
                                "--to", BOB, "hi"),
              "sipsilo: error: --insecure is for -t tls or wss"
              " (see 'python -m sipsilo send --help')", code=2)


def test_a_refused_websocket_origin_is_one_line(start: Callable[..., Secure]) -> None:
    secure = start(**{"websocket.allowed_origins": ["https://app.example.com"]})
    port = secure.ports["ws"]
    one_error(run(secure, "send", "ws", "--origin", "https://evil.example", "--from", ALICE,
                  "--to", BOB, "hi"),
              f"sipsilo: error: no ws connection to the server at ws:127.0.0.1:{port}:"
              " WebSocket handshake refused: HTTP 403 (origin not allowed)")
    allowed = run(secure, "send", "ws", "--origin", "https://app.example.com", "--from", ALICE,
                  "--to", BOB, "hi")
    assert (allowed.returncode, allowed.stdout) == (0, "202 Accepted\n"), allowed.stderr

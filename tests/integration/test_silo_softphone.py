"""A real softphone gets its offline messages: baresip registers to sipsilo and
shows the stored texts. (sipsak cannot take part: it has no mode that waits
for and answers incoming MESSAGEs.)

baresip prints received messages through its UI modules only, and its stdio
UI needs a terminal, so it runs on a pseudo-terminal, headless, from a
generated config directory, and quits by itself (-t).
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import ServerProcess, free_port
from tests.integration.secure_clients import make_certs, udp_message
from tests.integration.silo_helpers import send_message, wait_for

MakeServer = Callable[..., ServerProcess]
BARESIP = shutil.which("baresip")
MODULES = "/usr/lib/baresip/modules"


def _run_baresip(server: ServerProcess, want: list[bytes], seconds: int = 8, *,
                 transport: str = "udp", server_hostport: str | None = None,
                 extra_config: str = "") -> bytes:
    """Run baresip as bob until every `want` text was printed (or it quits).

    It registers over *transport* to server_hostport (the server's UDP port
    by default); extra_config adds lines to its config (TLS: sip_cafile).
    """
    assert BARESIP is not None
    conf = server.data_dir / "baresip"
    conf.mkdir()
    port = free_port({server.port})
    (conf / "config").write_text(
        f"poll_method epoll\nsip_listen 127.0.0.1:{port}\nsip_transports {transport}\n"
        f"module_path {MODULES}\nmodule stdio.so\nmodule_app account.so\nmodule_app menu.so\n"
        + extra_config
    )
    hostport = server_hostport or server.uri_host
    (conf / "accounts").write_text(f"<sip:bob@{hostport};transport={transport}>;regint=60\n")
    master, slave = pty.openpty()
    proc = subprocess.Popen([BARESIP, "-f", str(conf), "-t", str(seconds)],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + seconds + 5
    try:
        while time.monotonic() < deadline and not all(w in out for w in want):
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the terminal closed: baresip quit
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)
        os.close(master)
    return out


@pytest.mark.skipif(BARESIP is None or not os.path.isdir(MODULES),
                    reason="baresip is not installed (Debian package baresip-core)")
def test_baresip_receives_offline_messages(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.check_time": 1})
    for text in ("First offline note", "Zweite Nachricht: Grüße"):
        result, _ = send_message(server, body=f"{text}\n",
                                 headers="Content-Type: text/plain;charset=UTF-8\n")
        assert result.returncode == 0, result.stdout
    assert len(server.rows()) == 2

    first, second = b"First offline note", "Zweite Nachricht: Grüße".encode()
    out = _run_baresip(server, [first, second])
    assert b"registered successfully" in out, out.decode(errors="replace")
    assert first in out and second in out, out.decode(errors="replace")
    assert out.index(first) < out.index(second)
    assert f"sip:alice@{server.uri_host}:".encode() in out  # shown as from the sender
    wait_for(lambda: server.rows() == [], 5)


@pytest.mark.skipif(BARESIP is None or not os.path.isdir(MODULES),
                    reason="baresip is not installed (Debian package baresip-core)")
def test_baresip_over_tls_receives_offline_messages(make_server: MakeServer,
                                                    tmp_path: Path) -> None:
    data_dir = tmp_path / "tls"
    certs = make_certs(data_dir)
    udp = free_port()
    tls = free_port({udp})
    server = make_server(data_dir=data_dir, port=udp, **{
        "server.listen": [f"udp:127.0.0.1:{udp}", f"tls:127.0.0.1:{tls}"],
        "tls.certificate": "cert.pem", "tls.private_key": "key.pem",
    })
    for text in ("Secure note one", "Secure note two"):
        assert udp_message(udp, "bob", text) == "SIP/2.0 202 Accepted"
    first, second = b"Secure note one", b"Secure note two"
    out = _run_baresip(server, [first, second], transport="tls",
                       server_hostport=f"127.0.0.1:{tls}",
                       extra_config=f"sip_cafile {certs.ca}\n")
    assert b"registered successfully" in out, out.decode(errors="replace")
    assert first in out and second in out, out.decode(errors="replace")
    assert out.index(first) < out.index(second)
    wait_for(lambda: server.rows() == [], 5)
    wait_for(lambda: "(from tls:127.0.0.1:" in server.log())

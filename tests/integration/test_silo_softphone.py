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

import pytest

from tests.integration.harness import ServerProcess, free_port
from tests.integration.silo_helpers import send_message, wait_for

MakeServer = Callable[..., ServerProcess]
BARESIP = shutil.which("baresip")
MODULES = "/usr/lib/baresip/modules"


def _run_baresip(server: ServerProcess, want: list[bytes], seconds: int = 8) -> bytes:
    """Run baresip as bob until every `want` text was printed (or it quits)."""
    assert BARESIP is not None
    conf = server.data_dir / "baresip"
    conf.mkdir()
    port = free_port({server.port})
    (conf / "config").write_text(
        f"poll_method epoll\nsip_listen 127.0.0.1:{port}\nsip_transports udp\n"
        f"module_path {MODULES}\nmodule stdio.so\nmodule_app account.so\nmodule_app menu.so\n"
    )
    (conf / "accounts").write_text(f"<sip:bob@{server.uri_host};transport=udp>;regint=60\n")
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

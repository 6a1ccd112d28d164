"""Issue 11, finding 8: real clients register with the *default* ``[auth] algorithms``.

No ``auth.algorithms`` is set in these servers. baresip 1.0.0, SIPp 3.6 and sipsak 0.9.8
take the first challenge and give up when it is SHA-256 (against RFC 8760 §2.4); pjsua2
(when the ``pjsua2-python`` wheel is installed) is checked too. Each ``register_*``
function is also what ``scripts/auth_clients.py`` runs for the README's client table,
for every ``algorithms`` setting.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import SIPP, ServerProcess, free_port
from tests.integration.proxy_helpers import wait_registered
from tests.integration.test_auth import HOST, add_user, sipp_register
from tests.integration.test_proxy_softphones import BARESIP, Baresip

Make = Callable[..., ServerProcess]
SIPSAK = shutil.which("sipsak")
HAVE_PJSUA2 = importlib.util.find_spec("pjsua2") is not None
PJSUA_SCRIPT = Path(__file__).resolve().parent / "pjsua_register.py"
PASSWORD = "alicepw"
#: 127.0.0.1 for most; sipsak resolves the domain and mangles a port in it: localhost
DOMAINS = [HOST, "localhost"]


def prepare(data_dir: Path) -> dict[str, Any]:
    """Add alice to both domains; the settings a clients' server runs with."""
    sets = [f'server.domains=["{HOST}", "localhost"]']
    for domain in DOMAINS:
        add_user(data_dir, f"alice@{domain}", PASSWORD, *sets)
    # sipsak cuts five-digit ports (see test_proxy_softphones): four digits for all
    return {"port": free_port(low=2000, high=9999), "server.domains": DOMAINS}


def register_baresip(server: ServerProcess, workdir: Path) -> str | None:
    phone = Baresip(workdir / "baresip", server, [], password=PASSWORD)
    try:
        wait_registered(server, f"@127.0.0.1:{phone.sip_port}", timeout=8)
    except AssertionError:
        return "no binding; baresip: " + phone.log()[-300:]
    finally:
        phone.stop()
    return None


def register_sipp(server: ServerProcess, workdir: Path) -> str | None:
    result = sipp_register(server, "alice", "alice", PASSWORD, 200)
    return None if result.returncode == 0 else (result.received() or ["no answer"])[-1][:200]


def register_sipsak(server: ServerProcess, workdir: Path) -> str | None:
    done = subprocess.run(
        [SIPSAK or "sipsak", "-U", "-C", "empty", "-s", "sip:alice@localhost", "-p",
         f"{HOST}:{server.port}", "-a", PASSWORD, "-u", "alice", "-vv"],
        capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else (done.stdout + done.stderr)[-300:]


def register_pjsua2(server: ServerProcess, workdir: Path) -> str | None:
    done = subprocess.run(
        [sys.executable, str(PJSUA_SCRIPT), f"sip:alice@{server.uri_host}", "alice", PASSWORD,
         str(free_port({server.port}))],
        capture_output=True, text=True, timeout=40)
    return None if done.returncode == 0 else (done.stdout + done.stderr)[-300:]


#: name -> (runner, why it cannot run here or None)
CLIENTS: dict[str, tuple[Callable[[ServerProcess, Path], str | None], str | None]] = {
    "baresip 1.0.0": (register_baresip, None if BARESIP else "baresip is not installed"),
    "SIPp 3.6": (register_sipp, None if SIPP else "sipp is not installed"),
    "sipsak 0.9.8": (register_sipsak, None if SIPSAK else "sipsak is not installed"),
    "pjsua2 2.15": (register_pjsua2, None if HAVE_PJSUA2 else "pjsua2-python is not installed"),
}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_client_registers_with_the_default_algorithms(
        client: str, make_server: Make, tmp_path: Path) -> None:
    run, missing = CLIENTS[client]
    if missing:
        pytest.skip(missing)
    data = tmp_path / "clients"
    settings = prepare(data)
    server = make_server(data_dir=data, **settings)
    failure = run(server, tmp_path)
    assert failure is None, f"{client}: {failure}\n{server.log()[-2000:]}"
    assert "authentication failure" not in server.log()

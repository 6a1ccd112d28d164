"""Shared steps for the registrar/proxy integration tests: register, wait, run "bob"."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from tests.integration.harness import ServerProcess, SippResult, finish_sipp, run_sipp


def register(server: ServerProcess, *, contact: str, expires: int | str, expect: int = 200,
             user: str = "bob", cseq: int = 1, call_id: str = "reg-1@127.0.0.1",
             transport: str = "udp") -> str:
    """Run one REGISTER from SIPp (tests/scenarios/uac_register.xml); the final response."""
    result = run_sipp("uac_register", server, transport=transport, timeout=5,
                      keys={"user": user, "contact": contact, "expires": expires,
                            "reg_cseq": cseq},
                      subst={"expect": expect}, extra=["-cid_str", call_id])
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.stdout + result.messages
    return result.received()[-1]


def wait_registered(server: ServerProcess, contact_part: str, timeout: float = 5.0) -> None:
    """Poll `sipsilo location list` until a binding containing contact_part shows."""
    deadline = time.monotonic() + timeout
    listing = ""
    while time.monotonic() < deadline:
        listing = server.cli("location", "list").stdout
        if contact_part in listing:
            return
        time.sleep(0.1)
    raise AssertionError(f"{contact_part} never registered: {listing}\n{server.log()[-3000:]}")


class Sipp:
    """A SIPp run in the background (a UAS "bob"), collected with finish()."""

    def __init__(self, scenario: str, server: ServerProcess, local_port: int, **kw: Any) -> None:
        self.scenario = scenario
        self.server = server
        self.local_port = local_port
        proc = run_sipp(scenario, server, local_port=local_port, background=True, **kw)
        assert isinstance(proc, subprocess.Popen)
        self.proc = proc

    def finish(self, timeout: float = 15.0) -> SippResult:
        return finish_sipp(self.proc, self.server, self.scenario, self.local_port, timeout)

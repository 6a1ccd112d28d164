"""Running SIPp with the scenarios in bench/scenarios, always bounded in count and time."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import procs

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    """Local UDP ports; the same as the reference kit's, so logs read alike."""

    server: int = 5060
    ua: int = 5070  # the registered user's phone (dump)
    register: int = 5071  # sends the REGISTER
    sink: int = 5080  # answers the "user is offline" notices
    uac: int = 5081  # the load generator
    ceiling: int = 5090  # SIPp standing in for the server

    def bench_ports(self) -> list[int]:
        return [self.ua, self.register, self.sink, self.uac, self.ceiling]


def _cmd(scenario: str, target_port: int, local_port: int, *extra: str) -> list[str]:
    return [
        "sipp",
        f"{HOST}:{target_port}",
        "-sf",
        str(SCENARIOS / f"{scenario}.xml"),
        "-i",
        HOST,
        "-p",
        str(local_port),
        "-nostdin",
        *extra,
    ]


def start_uas(
    scenario: str, local_port: int, target_port: int, timeout_s: int, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """A SIPp server in the background; returns once its socket is bound."""
    proc = procs.start(
        _cmd(scenario, target_port, local_port, "-timeout", f"{timeout_s}s", *extra), log
    )
    if not procs.wait_until(lambda: procs.udp_bound(local_port) or proc.poll() is not None, 10):
        procs.stop(proc)
        raise RuntimeError(f"SIPp {scenario} did not bind UDP {local_port}; see {log}")
    if proc.poll() is not None:
        raise RuntimeError(f"SIPp {scenario} exited at start (rc {proc.returncode}); see {log}")
    return proc


def run_uac(
    scenario: str,
    target_port: int,
    local_port: int,
    count: int,
    rate: float,
    shortmsg: Path,
    log: Path,
    *extra: str,
) -> int:
    """One bounded client run: -m COUNT at RATE calls/s; returns SIPp's exit status.

    SIPp's -timeout ends the run count/rate + 30 s in; the Python-side wait adds a
    margin on top in case SIPp itself hangs.
    """
    shortmsg.unlink(missing_ok=True)
    tmo = int(count / max(rate, 1)) + 30
    args = [
        "-m",
        str(count),
        "-r",
        str(rate),
        "-rp",
        "1s",
        "-l",
        "20000",
        "-timeout",
        f"{tmo}s",
        "-recv_timeout",
        "10s",
        "-default_behaviors",
        "all,-bye",
        "-trace_shortmsg",
        "-shortmessage_file",
        str(shortmsg),
        *extra,
    ]
    proc = procs.start(_cmd(scenario, target_port, local_port, *args), log)
    try:
        return proc.wait(tmo + 30)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        return -1


def settle_port(port: int, timeout: float = 10.0) -> None:
    """Wait until a previous user of *port* has let it go (a SIPp that is exiting)."""
    if not procs.wait_until(lambda: not procs.udp_bound(port), timeout):
        raise RuntimeError(f"UDP port {port} is in use")
    time.sleep(0.05)

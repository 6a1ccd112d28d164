"""Process control for the bench: every process is started in a session of its own
and stopped through its process group id, never by name, and every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def _bound_ports(table: str, want_state: str | None) -> set[int]:
    ports: set[int] = set()
    for path in (f"/proc/net/{table}", f"/proc/net/{table}6"):
        try:
            with open(path) as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) < 4 or (want_state and cols[3] != want_state):
                        continue
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def udp_bound(port: int) -> bool:
    """Some socket of this network namespace is bound to UDP *port*."""
    return port in _bound_ports("udp", None)


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def start(cmd: Sequence[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start *cmd* as the leader of a new session, so stop() can signal its whole group."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> int | None:
    """SIGTERM to the group, SIGKILL after *grace* seconds; returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    else:
        # The leader exited; children it left in its group must not outlive the run.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the highest resident set size the process ever had (kernel-tracked)."""
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float | None:
    """VmRSS: the resident set size of the process now."""
    return _status_mb(pid, "VmRSS:")


def pss_mb(pid: int) -> float | None:
    """Proportional set size: each shared page (the interpreter, the extension
    modules, the page cache of the same files) counted once across the processes
    that share it, so the sum over a process tree is the memory they take together."""
    return _status_mb(pid, "Pss:", "smaps_rollup")


def _status_mb(pid: int, key: str, name: str = "status") -> float | None:
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct child processes of pid (a supervisor's workers)."""
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            out = [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def peak_rss_tree_mb(pid: int) -> float | None:
    """Peak RSS of pid plus that of each of its children (workers).

    The sum of the peaks: an upper bound of what they held at any one moment.
    """
    total = peak_rss_mb(pid)
    if total is None:
        return None
    for child in children(pid):
        total += peak_rss_mb(child) or 0.0
    return total


def cpu_seconds_tree(pid: int) -> float | None:
    """User + system CPU seconds of pid and its children (workers) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            if p == pid:
                return None
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def loadavg() -> list[float]:
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return []

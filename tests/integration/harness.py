"""Real server processes and real SIP clients for the integration tests.

`ServerProcess` starts `python -m sipsilo serve` on free loopback ports with a
data dir of its own; `run_sipp` runs a SIPp scenario from tests/scenarios
against it, always bounded in count (-m) and time (-timeout).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
SIPP = shutil.which("sipp")


def free_port(exclude: set[int] | None = None, low: int = 20000, high: int = 40000) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (random, to keep runs apart)."""
    for _ in range(200):
        port = random.randint(low, high)
        if exclude and port in exclude:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket(
                socket.AF_INET, socket.SOCK_STREAM
            ) as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


@dataclass
class ServerProcess:
    data_dir: Path
    port: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment, e.g. PYTHONPATH

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "sipsilo.db"

    @property
    def uri_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config_text(self) -> str:
        lines = ["[server]"]
        if "server.log_level" not in self.settings:
            lines.append('log_level = "debug"')
        if "server.listen" not in self.settings:
            lines.append(f'listen = ["udp:127.0.0.1:{self.port}", "tcp:127.0.0.1:{self.port}"]')
        sections: dict[str, list[str]] = {}
        for key, value in self.settings.items():
            section, _, name = key.partition(".")
            sections.setdefault(section, []).append(f"{name} = {_toml(value)}")
        for line in sections.pop("server", []):
            lines.append(line)
        for section, entries in sections.items():
            lines.append(f"[{section}]")
            lines.extend(entries)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> ServerProcess:
        if not self.port:
            self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "sipsilo.toml"
        config.write_text(self.config_text())
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSILO_")}
        env.update(self.env)
        if "PYTHONPATH" in self.env and os.environ.get("PYTHONPATH"):
            # a test's own modules come on top of the sources under test, not instead
            env["PYTHONPATH"] = os.pathsep.join((self.env["PYTHONPATH"], os.environ["PYTHONPATH"]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipsilo", "serve", "--config", str(config),
             "--data-dir", str(self.data_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            if "listening on" in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rows(self, sql: str = "select * from silo order by id", *args: Any) -> list[sqlite3.Row]:
        with sqlite3.connect(self.db_path, timeout=10) as db:
            db.row_factory = sqlite3.Row
            return list(db.execute(sql, args))

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        config = self.data_dir / "sipsilo.toml"
        return subprocess.run(
            [sys.executable, "-m", "sipsilo", *args, "--config", str(config),
             "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, input=input, timeout=30,
        )


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class SippResult:
    returncode: int
    stdout: str
    messages: str  # the -trace_msg log: every message sent and received

    def received(self) -> list[str]:
        """The messages SIPp received, in order (raw text)."""
        out = []
        for block in self.messages.split("\n\n\n"):
            _, _, rest = block.partition("message received")
            if rest:
                out.append(rest.split("\n", 2)[-1].strip())
        return out


def run_sipp(
    scenario: str,
    server: ServerProcess,
    *,
    local_port: int | None = None,
    keys: dict[str, Any] | None = None,
    calls: int = 1,
    rate: float | None = None,
    timeout: float = 30.0,
    transport: str = "udp",
    extra: list[str] | None = None,
    workdir: Path | None = None,
    background: bool = False,
    subst: dict[str, Any] | None = None,
) -> SippResult | subprocess.Popen[str]:
    """Run tests/scenarios/<scenario>.xml against the server; bounded by -m and -timeout.

    `keys` become SIPp's -key values ([name] in the scenario); `subst` replaces
    @@NAME@@ in the XML itself, for places SIPp takes no keyword (response codes).
    """
    assert SIPP, "sipp is not installed (Debian package sip-tester)"
    workdir = workdir or server.data_dir
    local_port = local_port or free_port({server.port})
    name = f"{scenario}.{local_port}"
    msg_file = workdir / f"{name}.msg.log"
    xml = (SCENARIOS / f"{scenario}.xml").read_text()
    for token, value in (subst or {}).items():
        xml = xml.replace(f"@@{token.upper()}@@", str(value))
    scenario_file = workdir / f"{name}.xml"
    scenario_file.write_text(xml)
    cmd = [
        SIPP, f"127.0.0.1:{server.port}", "-sf", str(scenario_file),
        "-i", "127.0.0.1", "-p", str(local_port), "-m", str(calls),
        "-timeout", f"{int(timeout)}s", "-nostdin", "-aa",
        "-trace_msg", "-message_file", str(msg_file), "-trace_err",
        "-error_file", str(workdir / f"{name}.err.log"),
        "-t", {"udp": "u1", "tcp": "t1"}[transport],
    ]
    if rate is not None:
        cmd += ["-r", str(rate)]
    for key, value in (keys or {}).items():
        cmd += ["-key", key, str(value)]
    cmd += extra or []
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=workdir)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=timeout + 30)
    return SippResult(proc.returncode, proc.stdout + proc.stderr,
                      msg_file.read_text(errors="replace") if msg_file.exists() else "")


def finish_sipp(proc: subprocess.Popen[str], server: ServerProcess, scenario: str, local_port: int,
                timeout: float = 60.0) -> SippResult:
    """Wait for a background SIPp run and collect it like run_sipp does."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    msg_file = server.data_dir / f"{scenario}.{local_port}.msg.log"
    return SippResult(proc.returncode, out or "",
                      msg_file.read_text(errors="replace") if msg_file.exists() else "")

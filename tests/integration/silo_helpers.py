"""SIPp clients for the message-silo tests: a sender, a registering client and
a user agent that receives MESSAGEs, plus a reader for SIPp's message log.

Every SIPp run is bounded by -m (calls) and -timeout; every wait polls with a
deadline.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.integration.harness import ServerProcess, SippResult, free_port, run_sipp

_ENTRY = re.compile(rb"^-{47} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\r?\n", re.M)


@dataclass
class SipEntry:
    """One message in SIPp's -trace_msg log."""

    at: datetime
    sent: bool
    raw: bytes
    start: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0]

    @property
    def status(self) -> int:
        return int(self.start.split(" ", 2)[1]) if not self.is_request else 0


def parse_log(data: bytes) -> list[SipEntry]:
    """Every message of a SIPp message log, body bytes exact (per Content-Length)."""
    entries: list[SipEntry] = []
    marks = list(_ENTRY.finditer(data))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(data)
        chunk = data[mark.end():end]
        title, _, rest = chunk.partition(b"\n")
        raw = rest.lstrip(b"\r\n")
        head, _, tail = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        entry = SipEntry(
            at=datetime.strptime(mark.group(1).decode(), "%Y-%m-%d %H:%M:%S.%f"),
            sent=b"sent" in title,
            raw=raw,
            start=lines[0],
            headers=headers,
        )
        length = entry.header("Content-Length") or entry.header("l")
        entry.body = tail[: int(length)] if length is not None else tail
        entries.append(entry)
    return entries


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; return its value, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def log_path(server: ServerProcess, scenario: str, port: int) -> Path:
    return server.data_dir / f"{scenario}.{port}.msg.log"


def send_message(
    server: ServerProcess,
    to_user: str = "bob",
    body: str = "Hello Bob\n",
    *,
    headers: str = "Content-Type: text/plain\n",
    expect: int = 202,
    from_uri: str | None = None,
    contact_port: int | None = None,
    calls: int = 1,
    rate: float | None = None,
    timeout: float = 10.0,
    transport: str = "udp",
) -> tuple[SippResult, list[SipEntry]]:
    """MESSAGE(s) from alice; returns the SIPp result and its parsed message log."""
    port = free_port({server.port})
    contact = f"sip:alice@127.0.0.1:{contact_port or port}"
    result = run_sipp(
        "silo_uac_message", server, local_port=port, calls=calls, rate=rate, timeout=timeout,
        transport=transport,
        keys={"from_uri": from_uri or f"sip:alice@{server.uri_host}", "to_user": to_user,
              "contact_uri": contact},
        subst={"headers": headers, "body": body, "expect": expect},
    )
    assert isinstance(result, SippResult)
    return result, parse_log(log_path(server, "silo_uac_message", port).read_bytes())


def start_burst(
    server: ServerProcess, calls: int, rate: float, timeout: float
) -> tuple[subprocess.Popen[str], int]:
    """`calls` MESSAGEs from alice to bob at `rate`/s in the background; (SIPp, its port).

    Finish with harness.finish_sipp(proc, server, "silo_uac_message", port, ...).
    """
    port = free_port({server.port})
    proc = run_sipp(
        "silo_uac_message", server, local_port=port, calls=calls, rate=rate, timeout=timeout,
        background=True,
        keys={"from_uri": f"sip:alice@{server.uri_host}", "to_user": "bob",
              "contact_uri": f"sip:alice@127.0.0.1:{port}"},
        subst={"headers": "Content-Type: text/plain\n", "body": "burst [call_number]\n",
               "expect": 202},
    )
    assert isinstance(proc, subprocess.Popen)
    return proc, port


def register(
    server: ServerProcess,
    contact_port: int,
    user: str = "bob",
    *,
    expires: int = 60,
    contact_params: str = "",
    headers: str = "",
) -> SippResult:
    """A REGISTER for user with Contact sip:user@127.0.0.1:contact_port; expects 200."""
    result = run_sipp(
        "silo_uac_register", server, timeout=10,
        keys={"user": user, "contact_port": contact_port, "expires": expires},
        subst={"contact_params": contact_params, "headers": headers},
    )
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.stdout
    return result


@dataclass
class UserAgent:
    """A SIPp user agent receiving MESSAGEs on its own port (runs in the background)."""

    server: ServerProcess
    port: int
    proc: subprocess.Popen[str]
    result: SippResult | None = None
    scenario: str = "silo_uas_message"

    def entries(self) -> list[SipEntry]:
        path = log_path(self.server, self.scenario, self.port)
        return parse_log(path.read_bytes()) if path.exists() else []

    def received(self) -> list[SipEntry]:
        """MESSAGE requests received, retransmissions left out."""
        seen: set[tuple[str | None, str | None]] = set()
        out = []
        for e in self.entries():
            if e.sent or not e.is_request or e.method != "MESSAGE":
                continue
            key = (e.header("Call-ID"), e.header("Via"))
            if key not in seen:
                seen.add(key)
                out.append(e)
        return out

    def finish(self, timeout: float = 30.0) -> SippResult:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.result = SippResult(self.proc.returncode, out or "", "")
        return self.result


def start_ua(
    server: ServerProcess,
    *,
    calls: int = 1,
    code: int = 200,
    reason: str = "OK",
    pause_ms: int = 0,
    timeout: float = 10.0,
    port: int | None = None,
    scenario: str = "silo_uas_message",
) -> UserAgent:
    """Start a UA that answers `calls` MESSAGEs with `code` after `pause_ms` each.

    scenario="silo_uas_message_first": only the first gets `code`, the rest 200.
    """
    port = port or free_port({server.port})
    proc = run_sipp(
        scenario, server, local_port=port, calls=calls, timeout=timeout, background=True,
        subst={"code": code, "reason": reason, "pause": pause_ms},
    )
    assert isinstance(proc, subprocess.Popen)
    ua = UserAgent(server, port, proc, scenario=scenario)
    _wait_bound(port)
    return ua


def _wait_bound(port: int, timeout: float = 5.0) -> None:
    """Wait until SIPp has bound its UDP port (a free_port probe then fails)."""
    import socket

    def bound() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return True
            return False

    wait_for(bound, timeout)


def count_202(entries: list[SipEntry]) -> int:
    """Distinct transactions (Call-IDs) answered 202."""
    return len({e.header("Call-ID") for e in entries if not e.sent and e.status == 202})


def stats(server: ServerProcess) -> dict[str, Any]:
    import json

    result = server.cli("--json", "stats")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))

"""Starting and stopping the sipsilo server under test, one fresh process per measurement."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import dbtools, procs

# Kamailio's reference configuration sends the notice from this address.
REGISTRAR = "sip:registrar@mydomain.com"


@dataclass(frozen=True)
class ServerSpec:
    port: int = 5060
    db_url: str | None = None
    extra_sets: tuple[str, ...] = field(default_factory=tuple)  # --set KEY=VALUE from the user
    scrape_every: float = 0.0  # seconds between GETs of /metrics (0: none)

    def http_listen(self) -> str | None:
        """The server's ``http.listen`` from the extra settings, if any."""
        for s in self.extra_sets:
            key, _, value = s.partition("=")
            if key.strip() == "http.listen" and value.strip():
                return value.strip().strip('"')
        return None

    def command(self, data_dir: Path, notify: bool) -> list[str]:
        listen = f'["udp:127.0.0.1:{self.port}", "tcp:127.0.0.1:{self.port}"]'
        cmd = [
            sys.executable,
            "-m",
            "sipsilo",
            "serve",
            "--data-dir",
            str(data_dir),
            "--set",
            "server.log_level=warning",
            "--set",
            f"server.listen={listen}",
            # An empty value unsets the key: no registrar, no notice.
            "--set",
            f"msilo.registrar={REGISTRAR if notify else ''}",
            *dbtools.server_sets(self.db_url),
        ]
        for s in self.extra_sets:
            cmd += ["--set", s]
        return cmd


class RunningServer:
    """``with RunningServer(...) as srv:`` -- started, bound, and at exit stopped,
    with its peak RSS read just before the SIGTERM (``srv.peak_rss_mb``)."""

    def __init__(self, spec: ServerSpec, data_dir: Path, log: Path, notify: bool) -> None:
        self.spec, self.data_dir, self.log, self.notify = spec, data_dir, log, notify
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss_mb: float | None = None
        self.exited_early = False
        self.scraper: Scraper | None = None

    def __enter__(self) -> RunningServer:
        port = self.spec.port
        if not procs.wait_until(lambda: not procs.udp_bound(port), 10):
            raise RuntimeError(f"UDP port {port} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        proc = self.proc = procs.start(self.spec.command(self.data_dir, self.notify), self.log)
        up = procs.wait_until(lambda: procs.udp_bound(port) or proc.poll() is not None, 60)
        if not up or proc.poll() is not None:
            procs.stop(proc)
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sipsilo did not start on UDP {port}:\n{tail}")
        time.sleep(0.5)  # let it finish its start-up after the bind (timers, control socket)
        listen = self.spec.http_listen()
        if listen and self.spec.scrape_every > 0:
            self.scraper = Scraper(f"http://{listen}/metrics", self.spec.scrape_every)
        return self

    def cpu_seconds(self) -> float | None:
        return None if self.proc is None else procs.cpu_seconds_tree(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.exited_early = self.proc.poll() is not None
        if self.scraper is not None:
            self.scraper.stop()
            self.scraper.log(self.log)
        self.peak_rss_mb = procs.peak_rss_tree_mb(self.proc.pid)
        procs.stop(self.proc)


class Scraper:
    """GET a URL every *every* seconds in a thread, as Prometheus would (more often)."""

    def __init__(self, url: str, every: float) -> None:
        self.url, self.every = url, every
        self.times: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    resp.read()
                self.times.append(time.monotonic() - started)
            except OSError:
                self.failures += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def log(self, path: Path) -> None:
        """One line at the end of the server log: scrapes made, their mean and max time."""
        n = len(self.times)
        mean = sum(self.times) / n * 1000 if n else 0.0
        peak = max(self.times) * 1000 if n else 0.0
        with path.open("a") as fh:
            fh.write(f"bench scraper: {n} scrapes of {self.url}, {self.failures} failed, "
                     f"mean {mean:.1f} ms, max {peak:.1f} ms\n")

"""The whole run, one measurement at a time: store (notice on, optionally off), dump,
the same two over a preloaded silo, optionally the SIPp-only ceiling."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import benches, dbtools, procs, report, sipp
from .server import RunningServer, ServerSpec


@dataclass(frozen=True)
class Plan:
    out: Path
    store: benches.StoreParams
    dump_n: int = 1000
    dump_q: int = 200
    scale_rows: int = 1_000_000
    notify_off: bool = False
    ceiling: bool = False
    netns: bool = True
    command: str = ""
    server: ServerSpec = field(default_factory=ServerSpec)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cmd_out(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def git_rev() -> str:
    """The server code a measurement ran: sipsilo is installed editable and others
    commit while a run goes on, so this is recorded per measurement."""
    repo = str(Path(__file__).resolve().parents[2])
    rev = _cmd_out(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = _cmd_out(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no", "src"])
    return rev + (" + uncommitted changes in src/" if dirty else "")


def meta(plan: Plan) -> dict[str, Any]:
    sipp_v = (
        _cmd_out(["sipp", "-v"]).split("SIPp ")[-1].split()[0].rstrip(".")
        if shutil.which("sipp")
        else "?"
    )
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / 1048576
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": plan.command,
        "host": f"{os.cpu_count()} CPUs, {mem_gib:.0f} GiB, {platform.platform()}",
        "versions": (
            f"Python {platform.python_version()}, SIPp {sipp_v}, SQLite {sqlite3.sqlite_version}"
        ),
        "git": git_rev(),
        "db_url": plan.server.db_url or dbtools.DEFAULT_DB_URL + " (in a fresh data dir per run)",
        "netns": "private network namespace (unshare -n)"
        if plan.netns
        else "host network namespace",
        "loadavg_start": procs.loadavg(),
    }


class Run:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.ports = sipp.Ports(server=plan.server.port)
        self.res: dict[str, Any] = {"meta": meta(plan), "params": _params(plan), "store": {}}

    def save(self) -> None:
        """Written after every measurement, so an interrupted run keeps what it had."""
        out = self.plan.out
        (out / "results.json").write_text(json.dumps(self.res, indent=2) + "\n")
        (out / "results.md").write_text(report.markdown(self.res))

    def _fresh(self, name: str, template: Path | None = None) -> Path:
        data = self.plan.out / name / "data"
        dbtools.reset(self.plan.server.db_url, data)
        if template is not None:
            dest = dbtools.sqlite_path(self.plan.server.db_url, data)
            assert dest is not None
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, dest)
        return data

    def store(self, name: str, notify: bool, template: Path | None = None) -> dict[str, Any]:
        data = self._fresh(name, template)
        d = self.plan.out / name
        with RunningServer(self.plan.server, data, d / "server.log", notify) as srv:
            r = benches.store_ladder(
                self.ports.server, self.ports, d, self.plan.store, log, srv.alive, srv.cpu_seconds
            )
            r["server_exited_early"] = not srv.alive()
        r["peak_rss_mb"] = srv.peak_rss_mb
        r["git"] = git_rev()
        r["rows_at_end"] = dbtools.count_rows(self.plan.server.db_url, data)
        log(
            f"{name}: {r['rate_msgs_per_s']} msg/s, p50/p99 {r['p50_ms']}/{r['p99_ms']} ms,"
            f" peak RSS {srv.peak_rss_mb} MB"
        )
        return r

    def dump(self, name: str, template: Path | None = None) -> dict[str, Any]:
        data = self._fresh(name, template)
        d = self.plan.out / name

        def rows(user: str) -> int | None:
            return dbtools.count_rows(self.plan.server.db_url, data, user)

        with RunningServer(self.plan.server, data, d / "server.log", notify=True) as srv:
            r = benches.dump(
                self.ports.server, self.ports, d, self.plan.dump_n, self.plan.dump_q, rows, log
            )
            r["server_exited_early"] = not srv.alive()
        r["peak_rss_mb"] = srv.peak_rss_mb
        r["git"] = git_rev()
        return r

    def ceiling(self) -> dict[str, Any]:
        d = self.plan.out / "ceiling"
        uas = sipp.start_uas(
            "ceiling_uas", self.ports.ceiling, self.ports.server, 3600, d / "uas.log"
        )
        try:
            r = benches.store_ladder(self.ports.ceiling, self.ports, d, self.plan.store, log)
        finally:
            procs.stop(uas)
        log(f"ceiling: {r['rate_msgs_per_s']} msg/s")
        return r

    def scale_template(self) -> tuple[Path, float] | None:
        """Create the schema with the server's own `db init`, then bulk-insert the rows."""
        if dbtools.sqlite_path(self.plan.server.db_url, self.plan.out) is None:
            log("scale: preloading is implemented for SQLite only; skipped")
            return None
        tdir = self.plan.out / "scale_template"
        tdir.mkdir(parents=True, exist_ok=True)
        path = tdir / "silo.db"
        path.unlink(missing_ok=True)
        dbtools.sipsilo_cli(tdir, f"sqlite:///{path}", "db", "init")
        secs = dbtools.preload_sqlite(path, self.plan.scale_rows)
        log(
            f"scale: {self.plan.scale_rows:,} rows preloaded in {secs:.1f} s"
            f" ({path.stat().st_size / 1e6:.0f} MB)"
        )
        return path, secs

    def all(self) -> None:
        p = self.plan
        steps: list[tuple[str, Callable[[], None]]] = [
            (
                "store, offline notice on",
                lambda: self._set(("store", "notify_on"), self.store("store_on", True)),
            ),
        ]
        if p.notify_off:
            steps.append(
                (
                    "store, offline notice off",
                    lambda: self._set(("store", "notify_off"), self.store("store_off", False)),
                )
            )
        steps.append(("dump", lambda: self._set(("dump",), self.dump("dump"))))
        if p.scale_rows > 0:
            steps.append(("scale", self._scale))
        if p.ceiling:
            steps.append(("SIPp<->SIPp ceiling", lambda: self._set(("ceiling",), self.ceiling())))
        for name, fn in steps:
            log(f"== {name}")
            try:
                fn()
            except Exception as e:  # one failed measurement must not lose the others
                log(f"{name} failed: {e}")
                self.res.setdefault("errors", []).append(f"{name}: {e}")
            self.save()

    def _set(self, path: tuple[str, ...], value: dict[str, Any]) -> None:
        node = self.res
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value

    def _scale(self) -> None:
        t = self.scale_template()
        if t is None:
            return
        path, secs = t
        sc: dict[str, Any] = {"rows": self.plan.scale_rows, "preload_s": round(secs, 2)}
        self.res["scale"] = sc
        sc["store"] = self.store("scale_store", True, path)
        self.save()
        sc["dump"] = self.dump("scale_dump", path)
        empty_rate = self.res["store"].get("notify_on", {}).get("rate_msgs_per_s")
        empty_dump = (self.res.get("dump") or {}).get("dump_time_s")
        sc["store_ratio"] = _div(sc["store"]["rate_msgs_per_s"], empty_rate)
        sc["dump_ratio"] = _div(sc["dump"].get("dump_time_s"), empty_dump)


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _params(plan: Plan) -> dict[str, Any]:
    return {
        "store_n": plan.store.n,
        "step_seconds": plan.store.step_seconds,
        "min_step": plan.store.min_step,
        "confirm_tries": plan.store.confirm_tries,
        "dump_n": plan.dump_n,
        "dump_queue_rate": plan.dump_q,
        "scale_rows": plan.scale_rows,
        "server_port": plan.server.port,
        "server_sets": list(plan.server.extra_sets),
    }

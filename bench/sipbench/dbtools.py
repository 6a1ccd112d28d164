"""The bench's view of the message store: where the SQLite file is, how many rows
are left, and the 1,000,000-row preload for the scale runs.

Rows are counted straight from the database (not through the server) so that the
count is what a restart would see.  Only SQLite is read directly; for other
backends the server's own CLI does it, and the preload is not offered.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_DB_URL = "sqlite:///sipsilo.db"  # the server's default, relative to --data-dir
DOMAIN = "127.0.0.1"


def sqlite_path(db_url: str | None, data_dir: Path) -> Path | None:
    """The file behind a sqlite:///rel or sqlite:////abs URL (None: not SQLite)."""
    url = db_url or DEFAULT_DB_URL
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower().split("+", 1)[0] != "sqlite":
        return None
    path = rest.split("?", 1)[0]
    if not path.startswith("/") or path in ("/", "/:memory:"):
        return None
    rel = path[1:]
    return Path(rel) if rel.startswith("/") else data_dir / rel


def server_sets(db_url: str | None) -> list[str]:
    return ["--set", f"msilo.db_url={db_url}"] if db_url else []


def sipsilo_cli(data_dir: Path, db_url: str | None, *args: str, timeout: float = 300) -> str:
    cmd = [
        sys.executable,
        "-m",
        "sipsilo",
        *args,
        "--data-dir",
        str(data_dir),
        *server_sets(db_url),
    ]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout).stdout


def reset(db_url: str | None, data_dir: Path) -> None:
    """An empty store: delete the SQLite file, or purge every row of another backend."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = sqlite_path(db_url, data_dir)
    if path is not None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        sipsilo_cli(data_dir, db_url, "db", "init")
        sipsilo_cli(data_dir, db_url, "silo", "purge", "--all")


def count_rows(db_url: str | None, data_dir: Path, username: str | None = None) -> int | None:
    path = sqlite_path(db_url, data_dir)
    if path is None:
        if username is None:
            return None  # listing every row of a big store through the CLI is too slow
        out = sipsilo_cli(data_dir, db_url, "silo", "list", f"sip:{username}@{DOMAIN}")
        return sum(1 for line in out.splitlines() if username in line)
    if not path.exists():
        return None
    # Read-only and with a busy timeout: the server may be writing at the same time.
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        if username is None:
            return int(con.execute("SELECT COUNT(*) FROM silo").fetchone()[0])
        q = "SELECT COUNT(*) FROM silo WHERE username = ? AND domain = ?"
        return int(con.execute(q, (username, DOMAIN)).fetchone()[0])
    finally:
        con.close()


def _preload_rows(n: int, now: int) -> Iterator[tuple[object, ...]]:
    # 100,000 users with 10 rows each: a realistic spread for the (username, domain)
    # index, and none of them is ever a user the benches send to.
    users = max(1, min(100_000, n // 10))
    for i in range(n):
        u = f"preload{i % users}"
        body = f"preloaded message {i} for {u}, padding to a typical chat line length".encode()
        yield (
            f"sip:sender{i % 997}@{DOMAIN}",
            f"sip:{u}@{DOMAIN}",
            u,
            DOMAIN,
            now,
            now + 259200,
            "text/plain",
            "text/plain; charset=utf-8",
            body,
            "",
            f"preload-{i}@bench",
        )


def preload_sqlite(path: Path, n: int) -> float:
    """Insert *n* rows in one transaction into a schema the server created; seconds taken."""
    t0 = time.monotonic()
    con = sqlite3.connect(path, isolation_level=None)
    try:
        # Only the bulk load itself is unsafe (no fsync); the file is closed cleanly
        # afterwards and the server reopens it with its own settings.
        con.execute("PRAGMA synchronous=OFF")
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO silo (src_addr, dst_addr, username, domain, inc_time, exp_time, snd_time,"
            " ctype, ctype_full, body, extra_hdrs, callid, status)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, 0)",
            _preload_rows(n, int(time.time())),
        )
        con.execute("COMMIT")
        # Fold the WAL into the main file, so that a plain copy of it is the whole store.
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return time.monotonic() - t0

"""`sipsilo serve` in a temporary data dir for the small one-question benches
(bench/tcp_balance.py, bench/worker_memory.py): started, waited for, stopped."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def serving(*sets: str, timeout: float = 30.0) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The server process and its data dir, running with ``--set`` *sets* until the
    block ends (then SIGTERM). Raises RuntimeError with its log if it does not start."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        args = [sys.executable, "-m", "sipsilo", "serve", "--data-dir", tmp]
        for item in sets:
            args += ["--set", item]
        with open(data / "server.log", "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    env=os.environ.copy())
        try:
            deadline = time.monotonic() + timeout
            while b"listening on" not in (data / "server.log").read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((data / "server.log").read_text(errors="replace"))
                time.sleep(0.05)
            yield proc, data
        finally:
            proc.terminate()
            proc.wait(60)

"""A server process loads the libraries of the features it is configured for, not all.

Every worker process pays for each library it imports (httpx with its HTTP/2 stack,
prometheus_client, the database drivers: 10-16 MB each), and with ``workers`` > 1 it
pays that once per process (docs/performance.md, the memory target of two workers).
"""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = ("httpx", "prometheus_client", "redis", "asyncpg", "asyncmy", "http_ece",
            "py_vapid", "cryptography", "wsproto")


def test_the_server_modules_load_no_optional_library() -> None:
    code = (
        "import sys, sipsilo.app, sipsilo.worker_main, sipsilo.workers.supervisor\n"
        f"print(' '.join(m for m in {OPTIONAL!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == []

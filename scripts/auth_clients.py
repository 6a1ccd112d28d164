#!/usr/bin/env python3
"""Which SIP clients register under which ``[auth] algorithms``: the README's table.

    python3 scripts/auth_clients.py

Starts a real server per setting (loopback only), lets each installed client register
(tests/integration/test_auth_clients.py has the clients), prints a Markdown table.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.harness import ServerProcess  # noqa: E402
from tests.integration.test_auth_clients import CLIENTS, prepare  # noqa: E402

SETTINGS = [["MD5", "SHA-256"], ["SHA-256", "MD5"], ["MD5"], ["SHA-256"]]


def main() -> int:
    head = ["client"] + [f"`{', '.join(a)}`" for a in SETTINGS]
    rows: dict[str, list[str]] = {name: [] for name in CLIENTS}
    with tempfile.TemporaryDirectory(prefix="sipsilo-auth-clients-") as tmp:
        for i, algorithms in enumerate(SETTINGS):
            data = Path(tmp) / f"srv{i}"
            settings = prepare(data)
            port = settings.pop("port")
            server = ServerProcess(data, port, {**settings, "auth.algorithms": algorithms})
            server.start()
            try:
                for name, (run, missing) in CLIENTS.items():
                    if missing:
                        rows[name].append(f"not run ({missing})")
                        continue
                    work = data / name.split()[0]
                    work.mkdir()
                    failure = run(server, work)
                    rows[name].append("registers" if failure is None else "**fails**")
                    if failure:
                        print(f"# {name} with {algorithms}: {failure!r}", file=sys.stderr)
            finally:
                server.stop()
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

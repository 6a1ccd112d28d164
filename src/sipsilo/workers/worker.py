"""Entry point of one worker process, started by the supervisor (not by hand).

The supervisor passes the effective configuration, this worker's number, the
branch token all workers share and the inherited file descriptors in one
environment variable; see workers.supervisor and transport.worker_link.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sipsilo.config import Config
from sipsilo.transport.worker_link import LinkClosed, WorkerLink
from sipsilo.workers.supervisor import SPEC_ENV


@dataclass
class WorkerContext:
    index: int
    workers: int
    token: str
    link_sock: socket.socket
    udp_socks: list[socket.socket] = field(default_factory=list)  # from the handshake
    link: WorkerLink | None = field(default=None)

    @property
    def name(self) -> str:
        return f"w{self.index}"


def context_from_env() -> tuple[Config, WorkerContext]:
    raw = os.environ.pop(SPEC_ENV, None)
    if raw is None:
        raise SystemExit("sipsilo.workers.worker is started by `sipsilo serve`, not by hand")
    spec = json.loads(raw)
    config = Config.model_validate_json(spec["config"]).model_copy(
        update={"data_dir": Path(spec["data_dir"])}
    )
    ctx = WorkerContext(
        index=int(spec["index"]),
        workers=int(spec["workers"]),
        token=str(spec["token"]),
        link_sock=socket.socket(fileno=int(spec["link_fd"])),
    )
    return config, ctx


def main() -> None:
    config, ctx = context_from_env()
    from sipsilo import app

    try:
        app.run(config, worker=ctx)
    except KeyboardInterrupt:
        pass
    except LinkClosed:
        sys.exit(1)  # the supervisor failed to start and says why
    except Exception as exc:  # one line, like `sipsilo serve`
        print(f"sipsilo worker {ctx.index}: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

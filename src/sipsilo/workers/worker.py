"""What a worker process learns from its supervisor at start-up.

The process's entry point is ``sipsilo.worker_main``, next to ``app`` that it
runs: this package does not import ``app`` (which imports it). The supervisor
passes the link's file descriptor number in an environment
variable, then the effective configuration, this worker's number and the
branch token all workers share as the link's first frame; see
workers.supervisor and transport.worker_link.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from sipsilo.config import Config
from sipsilo.transport.worker_link import WorkerLink, read_spec
from sipsilo.workers.supervisor import SPEC_ENV


@dataclass
class WorkerContext:
    index: int
    workers: int
    token: str
    link_sock: socket.socket
    link: WorkerLink | None = field(default=None)

    @property
    def name(self) -> str:
        return f"w{self.index}"


def context_from_link() -> tuple[Config, WorkerContext]:
    fd = os.environ.pop(SPEC_ENV, None)
    if fd is None or not fd.isdigit():
        raise SystemExit("sipsilo.worker_main is started by `sipsilo serve`, not by hand")
    link = socket.socket(fileno=int(fd))
    spec = json.loads(read_spec(link))
    # Validated with its data dir: relative paths (the TLS certificate) are
    # checked against it, as in the supervisor.
    config = Config.model_validate({**json.loads(spec["config"]),
                                    "data_dir": Path(spec["data_dir"])})
    ctx = WorkerContext(
        index=int(spec["index"]),
        workers=int(spec["workers"]),
        token=str(spec["token"]),
        link_sock=link,
    )
    return config, ctx

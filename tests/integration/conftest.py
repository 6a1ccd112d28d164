from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ServerProcess
from tests.silo.sqlservers import create_database, drop_database, server_url

pytestmark = pytest.mark.integration


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start real `sipsilo serve` processes: make_server(**{"msilo.registrar": "sip:..."})."""
    started: list[ServerProcess] = []

    def make(data_dir: Path | None = None, port: int = 0, env: dict[str, str] | None = None,
             **settings: Any) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / f"srv{len(started)}", port, settings,
                               env=env or {})
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL server, dropped afterwards."""
    server_url("postgresql")  # skip (or fail under CI) when the server is down
    url, name = asyncio.run(create_database("postgresql"))
    yield url
    asyncio.run(drop_database("postgresql", name))


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server()

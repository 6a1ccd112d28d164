from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ServerProcess
from tests.silo.sqlservers import create_database, drop_database, server_url, sql

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


@pytest.fixture(params=["postgresql", "mysql"])
def shared_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the shared PostgreSQL, then MariaDB, server, for several
    instances at once; dropped afterwards."""
    server_url(request.param)  # skip (or fail under CI) when the server is down
    url, name = asyncio.run(create_database(request.param))
    yield url
    asyncio.run(drop_database(request.param, name))


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server()


@dataclass
class SiloBackend:
    """The message store a test server uses: SQLite in its data dir, or a fresh
    database on the shared PostgreSQL/MariaDB server."""

    name: str
    url: str | None = None  # None: the server's own SQLite file

    @property
    def settings(self) -> dict[str, Any]:
        return {} if self.url is None else {"msilo.db_url": self.url}

    def rows(self, server: ServerProcess, where: str = "1 = 1", *args: Any) -> list[Any]:
        """(username, src_addr, callid, body) of the silo rows, in id order."""
        query = f"SELECT username, src_addr, callid, body FROM silo WHERE {where} ORDER BY id"
        if self.url is None:
            return [tuple(r) for r in server.rows(query, *args)]
        found = asyncio.run(sql(self.url, query.replace("?", "%s"), args))
        return [(*r[:3], bytes(r[3])) for r in found]


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def silo_backend(request: pytest.FixtureRequest) -> Iterator[SiloBackend]:
    """Each of the three store backends in turn (server ones skipped when down)."""
    if request.param == "sqlite":
        yield SiloBackend("sqlite")
        return
    server_url(request.param)  # skip (or fail under CI) when the server is down
    url, name = asyncio.run(create_database(request.param))
    try:
        yield SiloBackend(request.param, url)
    finally:
        asyncio.run(drop_database(request.param, name))

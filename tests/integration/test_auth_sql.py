"""Digest authentication against the subscriber table on PostgreSQL: a real `sipsilo
serve` whose silo (and so subscriber table) is a fresh PostgreSQL database, a user
added with `sipsilo user add`, REGISTERs over a raw socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.integration.harness import ServerProcess
from tests.integration.test_auth import COMPAT, HOST, Client, add_user, status
from tests.silo.sqlservers import sql

REALM = "sipsilo.test"


def test_register_against_a_postgresql_subscriber_table(
    pg_db: str, make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "pg"
    add_user(data, f"bob@{HOST}", "secret", f"msilo.db_url={pg_db}", f"auth.realm={REALM}")
    rows = asyncio.run(sql(pg_db, "SELECT username, domain, password FROM subscriber"))
    assert [tuple(r) for r in rows] == [("bob", HOST, "")]
    server = make_server(data_dir=data, **{**COMPAT, "msilo.db_url": pg_db,
                                           "auth.realm": REALM})
    log = server.log()
    assert "authentication on: realm 'sipsilo.test', 1 users" in log
    assert "authentication is OFF" not in log
    c = Client(server)
    try:
        first = c.send("REGISTER", "bob")
        assert status(first) == 401 and f'realm="{REALM}"' in first
        wrong = c.send("REGISTER", "bob", auth=c.credentials(first, "REGISTER", "bob", "guess"))
        assert status(wrong) == 401, wrong
        retry = c.send("REGISTER", "bob")
        ok = c.send("REGISTER", "bob", auth=c.credentials(retry, "REGISTER", "bob", "secret"))
        assert status(ok) == 200, ok
    finally:
        c.close()
    assert "REGISTER as bob@127.0.0.1 (wrong password)" in server.log()

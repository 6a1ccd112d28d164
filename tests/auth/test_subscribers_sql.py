"""The subscriber table on every backend: SQLite, MariaDB and PostgreSQL.

The same store tests run against each; on the servers every test gets its own table
(``sub_t<random>``), dropped afterwards with its version rows.  An unreachable server
skips, except under CI (see tests/silo/sqlservers.py).  Kamailio's own kamdbctl DDL
for each dialect is adopted as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sipsilo.admin import users as admin
from sipsilo.auth import start_auth
from sipsilo.auth.subscribers import (
    KAMAILIO_SUBSCRIBER_VERSION,
    SqliteSubscribers,
    SqlSubscribers,
    Subscribers,
    open_blocking,
)
from sipsilo.config import Config, load_config
from sipsilo.db.base import open_pool
from sipsilo.db.errors import StoreError
from sipsilo.db.schema import kamailio_version_table_sql
from sipsilo.db.url import parse_db_url as parse_sql_url
from sipsilo.sip.digest import ha1
from tests.silo.sqlservers import server_url, sql

DIALECTS = ["sqlite", "mysql", "postgresql"]
REALM = "example.com"


class Backend:
    """One table on one backend, with raw SQL access as another process has it."""

    def __init__(self, dialect: str, tmp_path: Path) -> None:
        self.dialect = dialect
        self.table = f"sub_t{secrets.token_hex(5)}"
        if dialect == "sqlite":
            self.path = str(tmp_path / "s.db")
            self.url = "sqlite:///" + self.path
        else:
            self.url = server_url(dialect)

    def config(self, *sets: str, data_dir: Path | None = None) -> Config:
        return load_config(None, [f"msilo.db_url={self.url}", "msilo.db_pool_max=4",
                                  f"auth.db_table={self.table}", f"auth.realm={REALM}", *sets],
                           env={}, data_dir=data_dir)

    def open(self) -> Subscribers:
        return open_blocking(self.config())

    def sql(self, statement: str, args: tuple[Any, ...] = ()) -> list[Any]:
        if self.dialect == "sqlite":
            with sqlite3.connect(self.path) as conn:
                return conn.execute(statement.replace("%s", "?"), args).fetchall()
        return asyncio.run(sql(self.url, statement, args))

    def script(self, ddl: str) -> None:
        for stmt in filter(None, (s.strip() for s in ddl.split(";"))):
            self.sql(stmt)

    def drop(self) -> None:
        if self.dialect == "sqlite":
            return
        self.sql(f"DROP TABLE IF EXISTS {self.table}")
        for stmt, arg in (("DELETE FROM version WHERE table_name = %s", self.table),
                          ("DELETE FROM sipsilo_version WHERE component = %s",
                           f"auth:{self.table}")):
            with contextlib.suppress(StoreError):
                self.sql(stmt, (arg,))


@pytest.fixture(params=DIALECTS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    yield b
    b.drop()


def test_subscriber_store(backend: Backend) -> None:
    db = backend.open()
    try:
        db.ensure_schema()
        db.ensure_schema()  # idempotent
        assert db.count() == 0 and db.list() == []
        db.add("bob", "example.com", REALM, "secret")
        with pytest.raises(ValueError, match="exists already"):
            db.add("bob", "example.com", REALM, "x")
        # 'BOB' is another user; MySQL's unique key takes it for bob: one clear line
        try:
            db.add("BOB", "example.com", REALM, "x")
        except ValueError as exc:
            assert backend.dialect == "mysql" and "differs only in case" in str(exc)
        else:
            assert backend.dialect != "mysql"
            assert db.remove("BOB", "example.com")
        bob = db.get("bob", "example.com")
        assert bob is not None and bob.password == ""
        assert bob.ha1 == ha1("MD5", "bob", REALM, "secret")
        assert bob.ha1b == ha1("MD5", "bob@example.com", REALM, "secret")
        assert bob.hash_for("SHA-256", REALM) == ha1("SHA-256", "bob", REALM, "secret")
        assert bob.hash_for("MD5-sess", REALM) == bob.ha1
        assert db.get("bob", "other.org") is None and db.count() == 1
        # MariaDB's collation says 'bob ' = 'bob' = 'BOB'; no backend may answer so
        for user, domain in (("bob ", "example.com"), ("BOB", "example.com"),
                             ("bob", "example.com "), ("bob  ", "example.com  ")):
            assert db.get(user, domain) is None, (user, domain)
            assert not db.set_password(user, domain, REALM, "x"), (user, domain)
            assert not db.remove(user, domain), (user, domain)
        assert db.get("bob", "example.com") == bob
        assert db.set_password("bob", "example.com", REALM, "new")
        assert db.set_password("bob", "example.com", REALM, "new")  # unchanged still "found"
        again = db.get("bob", "example.com")
        assert again is not None and again.ha1 == ha1("MD5", "bob", REALM, "new")
        assert not db.set_password("eve", "example.com", REALM, "x")
        db.add("alice", "example.com", REALM, "pw")
        assert [s.username for s in db.list()] == ["alice", "bob"]
        assert db.remove("bob", "example.com") and not db.remove("bob", "example.com")
        assert db.count() == 1
        rows = backend.sql("SELECT table_version FROM version WHERE table_name = %s",
                           (backend.table,))
        assert [int(r[0]) for r in rows] == [KAMAILIO_SUBSCRIBER_VERSION]
    finally:
        db.close()


def test_user_commands_and_db_init(backend: Backend) -> None:
    cfg = backend.config()
    assert admin.subscribers_init(cfg) == backend.table
    assert "first user" in admin.user_add(cfg, "sip:bob@Example.COM", "secret")
    assert admin.user_add(cfg, "alice@example.com", "pw").startswith("added alice@example.com")
    assert admin.user_list(cfg) == ["alice@example.com\tmd5,sha256",
                                    "bob@example.com\tmd5,sha256"]
    assert admin.user_passwd(cfg, "bob@example.com", "new") == "password of bob@example.com changed"
    with pytest.raises(LookupError):
        admin.user_passwd(cfg, "eve@example.com", "x")
    assert admin.user_remove(cfg, "alice@example.com") == "removed alice@example.com"
    with pytest.raises(LookupError):
        admin.user_remove(cfg, "alice@example.com")
    with pytest.raises(ValueError, match="empty password"):
        admin.user_add(cfg, "carol@example.com", "")
    rows = backend.sql(f"SELECT username, domain, password, ha1 FROM {backend.table}")
    assert [tuple(r) for r in rows] == [("bob", "example.com", "",
                                         ha1("MD5", "bob", REALM, "new"))]


def test_start_auth_auto_follows_the_table(backend: Backend, tmp_path: Path) -> None:
    cfg = backend.config("auth.nonce_expires=30", 'auth.algorithms=["SHA-256", "MD5"]',
                         "auth.max_failures=5", "auth.block_time=60", data_dir=tmp_path)

    async def start(add: str | None = None) -> tuple[bool, Any]:
        setup = await start_auth(cfg)
        try:
            auth = setup.auth
            if auth is None and setup.auto is not None and add:
                assert await setup.auto.poll() is None  # not due yet
                # a user added while the server runs: the next look turns it on
                await asyncio.to_thread(admin.user_add, cfg, add, "secret")
                setup.auto._next = 0.0  # due now (once a second in service)
                auth = await setup.auto.poll()
            if auth is None:
                return False, None
            # The authenticator asks the store from a worker thread, as policy does.
            return True, await asyncio.to_thread(auth.subscribers.get, "bob", "example.com")
        finally:
            if setup.subscribers is not None:
                await setup.subscribers.aclose()

    assert asyncio.run(start()) == (False, None)  # empty table: auto is off
    on, bob = asyncio.run(start(add="bob@example.com"))  # ... until a user is added
    assert on and bob.ha1 == ha1("MD5", "bob", REALM, "secret")
    on, bob = asyncio.run(start())  # and on at the next start
    assert on and bob.ha1 == ha1("MD5", "bob", REALM, "secret")
    cfg = backend.config("auth.enabled=false", data_dir=tmp_path)
    assert asyncio.run(start()) == (False, None)


# Kamailio 5.x kamdbctl DDL for the subscriber table, per dialect ({t}: our test table).
KAMAILIO_DDL = {
    "sqlite": """
CREATE TABLE {t} (
    id INTEGER PRIMARY KEY NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL,
    password VARCHAR(64) DEFAULT '' NOT NULL,
    ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    ha1b VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT {t}_account_idx UNIQUE (username, domain)
);
CREATE INDEX {t}_username_idx ON {t} (username);
INSERT INTO version (table_name, table_version) values ('{t}','7')
""",
    "mysql": """
CREATE TABLE `{t}` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `username` VARCHAR(64) DEFAULT '' NOT NULL,
    `domain` VARCHAR(64) DEFAULT '' NOT NULL,
    `password` VARCHAR(64) DEFAULT '' NOT NULL,
    `ha1` VARCHAR(128) DEFAULT '' NOT NULL,
    `ha1b` VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT account_idx UNIQUE (`username`, `domain`)
);
CREATE INDEX username_idx ON `{t}` (`username`);
INSERT INTO version (table_name, table_version) values ('{t}','7')
""",
    "postgresql": """
CREATE TABLE {t} (
    id SERIAL PRIMARY KEY NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL,
    password VARCHAR(64) DEFAULT '' NOT NULL,
    ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    ha1b VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT {t}_account_idx UNIQUE (username, domain)
);
CREATE INDEX {t}_username_idx ON {t} (username);
INSERT INTO version (table_name, table_version) values ('{t}','7')
""",
}


def test_adopts_a_table_made_by_kamailio(backend: Backend) -> None:
    t = backend.table
    backend.sql(kamailio_version_table_sql(backend.dialect))  # type: ignore[arg-type]
    backend.script(KAMAILIO_DDL[backend.dialect].format(t=t))
    # kamctl add with STORE_PLAINTEXT_PW=1, and one with hashes only
    backend.sql(f"INSERT INTO {t} (username, domain, password, ha1, ha1b) "
                "VALUES ('alice', 'example.com', 'pw', '', '')")
    backend.sql(f"INSERT INTO {t} (username, domain, password, ha1, ha1b) "
                "VALUES (%s, 'example.com', '', %s, '')",
                ("carol", ha1("MD5", "carol", REALM, "pw2")))
    db = backend.open()
    try:
        db.ensure_schema()
        db.ensure_schema()
        alice, carol = db.get("alice", "example.com"), db.get("carol", "example.com")
        assert alice is not None and carol is not None
        assert alice.hash_for("SHA-256", REALM) == ha1("SHA-256", "alice", REALM, "pw")
        assert alice.hash_for("MD5", REALM) == ha1("MD5", "alice", REALM, "pw")
        assert carol.hash_for("MD5", REALM) == ha1("MD5", "carol", REALM, "pw2")
        assert carol.hash_for("SHA-256", REALM) is None  # until 'sipsilo user passwd'
        assert db.set_password("carol", "example.com", REALM, "pw3")
        carol = db.get("carol", "example.com")
        assert carol is not None
        assert carol.hash_for("SHA-256", REALM) == ha1("SHA-256", "carol", REALM, "pw3")
        assert db.count() == 2
    finally:
        db.close()
    rows = backend.sql("SELECT table_version FROM version WHERE table_name = %s", (t,))
    assert [int(r[0]) for r in rows] == [7]
    # Kamailio's INSERT, which does not name our column, still works; its SELECT reads ours
    backend.sql(f"INSERT INTO {t} (username, domain, password, ha1, ha1b) "
                "VALUES ('dave', 'example.com', '', 'x', 'y')")
    rows = backend.sql(f"SELECT ha1, ha1b FROM {t} WHERE username = %s AND domain = %s",
                       ("carol", "example.com"))
    assert [tuple(r) for r in rows] == [(ha1("MD5", "carol", REALM, "pw3"),
                                         ha1("MD5", "carol@example.com", REALM, "pw3"))]


def test_a_table_that_is_not_a_subscriber_table_is_refused(backend: Backend) -> None:
    backend.sql(f"CREATE TABLE {backend.table} (id INTEGER PRIMARY KEY, username VARCHAR(64))")
    db = backend.open()
    try:
        with pytest.raises(ValueError, match="lacks Kamailio subscriber columns"):
            db.ensure_schema()
    finally:
        db.close()


def test_unreachable_server_is_one_line_naming_the_key() -> None:
    url = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=2"
    cfg = load_config(None, [f"msilo.db_url={url}"], env={})
    with pytest.raises(StoreError, match=r"^msilo\.db_url: cannot connect to postgresql://"):
        open_blocking(cfg)


def test_blocking_store_refuses_a_call_from_its_own_loop() -> None:
    url = parse_sql_url("postgresql://postgres@127.0.0.1:1/test")

    async def main() -> None:
        store = SqlSubscribers(open_pool(url, 1, 1))
        store._loop = asyncio.get_running_loop()  # as open() would leave it
        with pytest.raises(RuntimeError, match="own event loop"):
            store.count()

    asyncio.run(main())


def test_sqlite_store_is_the_sqlite_class(tmp_path: Path) -> None:
    cfg = Backend("sqlite", tmp_path).config()
    store = open_blocking(cfg)
    assert isinstance(store, SqliteSubscribers)
    store.close()

"""Schema DDL per dialect and the migration runner."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from sipsilo.db import schema
from sipsilo.db.schema import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    MigrationContext,
    MigrationError,
    create_table_sql,
    full_ddl,
    migrate,
)


def conn(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None, timeout=10, check_same_thread=False)


def dump(c: sqlite3.Connection) -> list[tuple[str, str]]:
    return sorted(c.execute("select name, sql from sqlite_master where sql is not null"))


def test_ddl_per_dialect() -> None:
    lite = create_table_sql("silo", "sqlite")
    assert "id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL" in lite
    assert "ctype VARCHAR(32) DEFAULT 'text/plain' NOT NULL" in lite
    assert "body BLOB," in lite and "extra_hdrs TEXT," in lite
    assert "claim_until INTEGER DEFAULT 0 NOT NULL" in lite
    my = "\n".join(full_ddl("silo", "mysql"))
    assert "id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL" in my
    assert "inc_time INT DEFAULT 0 NOT NULL" in my and "body BLOB" in my
    assert "CREATE INDEX account_idx ON silo (username, domain)" in my
    pg = "\n".join(full_ddl("silo", "postgresql"))
    assert "id SERIAL PRIMARY KEY NOT NULL" in pg and "body BYTEA" in pg
    assert "silo_account_idx ON silo (username, domain)" in pg
    for dialect in schema.DIALECTS:
        ddl = create_table_sql("silo", dialect)
        assert "TEXT DEFAULT" not in ddl and "BLOB DEFAULT" not in ddl  # MySQL refuses those
    with pytest.raises(ValueError):
        create_table_sql("silo; drop table x", "sqlite")


def test_fresh_database_and_idempotent(tmp_path: Path) -> None:
    c = conn(tmp_path / "m.db")
    assert migrate(c, "sqlite", "silo") == (0, LATEST_VERSION)
    before = dump(c)
    assert migrate(c, "sqlite", "silo") == (LATEST_VERSION, LATEST_VERSION)
    assert dump(c) == before
    assert c.execute("select table_version from version where table_name='silo'").fetchone() == (8,)
    assert c.execute(
        "select version from sipsilo_version where component='silo:silo'"
    ).fetchone() == (LATEST_VERSION,)
    idx = {r[1] for r in c.execute("pragma index_list(silo)")}
    assert {"silo_account_idx", "silo_exp_time_idx"} <= idx


def test_configurable_table_name(tmp_path: Path) -> None:
    c = conn(tmp_path / "m.db")
    migrate(c, "sqlite", "silo")
    migrate(c, "sqlite", "offline_msgs")
    assert c.execute(
        "select table_version from version where table_name='offline_msgs'"
    ).fetchone() == (8,)
    assert {r[1] for r in c.execute("pragma index_list(offline_msgs)")} == {
        "offline_msgs_account_idx",
        "offline_msgs_exp_time_idx",
        "offline_msgs_msg_key_idx",
        "offline_msgs_src_addr_idx",
    }


def test_appended_migration_runs_once(tmp_path: Path) -> None:
    calls: list[int] = []

    nxt = LATEST_VERSION + 1

    def v2(ctx: MigrationContext) -> None:
        calls.append(nxt)
        ctx.execute(f"ALTER TABLE {ctx.table} ADD COLUMN v2col INTEGER DEFAULT 0 NOT NULL")

    steps = (*MIGRATIONS, Migration(nxt, "add v2col", v2))
    c = conn(tmp_path / "m.db")
    migrate(c, "sqlite", "silo")  # an installation at the latest version
    assert migrate(c, "sqlite", "silo", steps) == (LATEST_VERSION, nxt)
    assert migrate(c, "sqlite", "silo", steps) == (nxt, nxt)
    assert calls == [nxt]
    assert "v2col" in {r[1] for r in c.execute("pragma table_info(silo)")}
    # This sipsilo refuses a database from the future.
    with pytest.raises(MigrationError, match="newer"):
        migrate(c, "sqlite", "silo")


def test_failing_migration_rolls_back(tmp_path: Path) -> None:
    def bad(ctx: MigrationContext) -> None:
        ctx.execute(f"ALTER TABLE {ctx.table} ADD COLUMN half INTEGER")
        raise RuntimeError("boom")

    c = conn(tmp_path / "m.db")
    migrate(c, "sqlite", "silo")
    with pytest.raises(RuntimeError):
        migrate(c, "sqlite", "silo", (*MIGRATIONS, Migration(LATEST_VERSION + 1, "bad", bad)))
    assert "half" not in {r[1] for r in c.execute("pragma table_info(silo)")}
    assert schema.current_version(c.cursor(), "sqlite", "silo") == LATEST_VERSION


def test_concurrent_migrations(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def go() -> None:
        try:
            migrate(conn(tmp_path / "m.db"), "sqlite", "silo")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    c = conn(tmp_path / "m.db")
    assert c.execute("select count(*) from version where table_name='silo'").fetchone() == (1,)


def test_foreign_table_refused(tmp_path: Path) -> None:
    c = conn(tmp_path / "m.db")
    c.execute("create table silo (id integer primary key, foo text)")
    with pytest.raises(MigrationError, match="Kamailio columns"):
        migrate(c, "sqlite", "silo")


def _silo_ddl(c: sqlite3.Connection) -> str:
    return str(c.execute("select sql from sqlite_master where name = 'silo'").fetchone()[0])


def test_sqlite_ids_are_never_reused(tmp_path: Path) -> None:
    c = conn(tmp_path / "m.db")
    migrate(c, "sqlite", "silo")
    insert = "insert into silo (username, domain) values ('bob', 'x')"
    first = c.execute(insert).lastrowid
    c.execute("delete from silo where id = ?", (first,))
    assert c.execute(insert).lastrowid == first + 1


def test_migration_makes_an_existing_file_stop_reusing_ids(tmp_path: Path) -> None:
    """A file made before AUTOINCREMENT (step 1 only) is rebuilt with it by step 2:
    rows, columns, indexes and the Kamailio version row stay."""
    c = conn(tmp_path / "m.db")
    migrate(c, "sqlite", "silo", MIGRATIONS[:1])
    c.execute("update sipsilo_version set version = 1")
    old = _silo_ddl(c).replace(" AUTOINCREMENT", "")
    c.execute("drop table silo")
    c.execute(old)
    for sql in schema.create_index_sql("silo", "sqlite"):
        c.execute(sql)
    assert "AUTOINCREMENT" not in _silo_ddl(c)
    for i in range(3):
        c.execute("insert into silo (username, domain, body, attempts) values (?, 'x', ?, ?)",
                  (f"u{i}", b"\x00body", i))
    rows = c.execute("select * from silo order by id").fetchall()
    c.execute("delete from silo where id = 3")  # the newest one was delivered

    assert migrate(c, "sqlite", "silo") == (1, LATEST_VERSION)
    assert "AUTOINCREMENT" in _silo_ddl(c)
    assert c.execute("select * from silo order by id").fetchall() == rows[:2]
    assert {"silo_account_idx", "silo_exp_time_idx"} <= {
        r[1] for r in c.execute("pragma index_list(silo)")}
    assert c.execute("select table_version from version where table_name='silo'").fetchone() == (
        8,)
    new = c.execute("insert into silo (username, domain) values ('bob', 'x')").lastrowid
    c.execute("delete from silo where id = ?", (new,))
    assert c.execute("insert into silo (username, domain) values ('bob', 'x')").lastrowid == (
        new + 1)
    # nothing left behind, and a second run changes nothing
    before = dump(c)
    assert migrate(c, "sqlite", "silo") == (LATEST_VERSION, LATEST_VERSION)
    assert dump(c) == before
    assert "silo_rebuild" not in {r[0] for r in before}

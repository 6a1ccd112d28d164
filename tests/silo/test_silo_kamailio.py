"""Compatibility with Kamailio 5.6 msilo, both ways, using its exact SQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sipsilo.db.schema import LATEST_VERSION, migrate

from .helpers import (
    K_DELETE_EXPIRED,
    K_DELETE_ID,
    K_INSERT,
    K_SELECT,
    K_VERSION,
    msg,
    opened,
    raw,
    run,
)

# Kamailio 5.6 utils/kamctl/sqlite: standard-create.sql (version) and msilo-create.sql.
KAMAILIO_SQLITE_DDL = """
CREATE TABLE version (
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);
INSERT INTO version (table_name, table_version) values ('version','1');
CREATE TABLE silo (
    id INTEGER PRIMARY KEY NOT NULL,
    src_addr VARCHAR(255) DEFAULT '' NOT NULL,
    dst_addr VARCHAR(255) DEFAULT '' NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL,
    inc_time INTEGER DEFAULT 0 NOT NULL,
    exp_time INTEGER DEFAULT 0 NOT NULL,
    snd_time INTEGER DEFAULT 0 NOT NULL,
    ctype VARCHAR(32) DEFAULT 'text/plain' NOT NULL,
    body BLOB,
    extra_hdrs TEXT,
    callid VARCHAR(128) DEFAULT '' NOT NULL,
    status INTEGER DEFAULT 0 NOT NULL
);
CREATE INDEX silo_account_idx ON silo (username, domain);
INSERT INTO version (table_name, table_version) values ('silo','8');
"""

BODY = b"Hello Bob, this is Alice.\r\n"


def kamailio_insert(conn: sqlite3.Connection, **over: object) -> int:
    v: dict[str, object] = {
        "username": "bob",
        "domain": "127.0.0.1",
        "dst_addr": "sip:bob@127.0.0.1",
        "src_addr": "sip:alice@127.0.0.1",
        "body": BODY,
        "ctype": "text/plain",
        "exp_time": 1795955905,
        "inc_time": 1795696705,
        "snd_time": 0,
        "extra_hdrs": "X-Test-Id: e5\r\n",
    }
    v.update(over)
    cur = conn.execute(K_INSERT, tuple(v.values()))
    assert cur.lastrowid is not None
    return cur.lastrowid


def test_kamailio_accepts_our_database(tmp_path: Path) -> None:
    path = tmp_path / "m.db"

    async def body() -> None:
        s = await opened(path)
        await s.close()

    run(body)
    c = raw(path)
    assert c.execute(K_VERSION, ("silo",)).fetchone() == (8,)
    # Our DDL for Kamailio's columns is Kamailio's DDL.
    ours = {r[1]: r[2:6] for r in c.execute("pragma table_info(silo)")}
    k = sqlite3.connect(":memory:")
    k.executescript(KAMAILIO_SQLITE_DDL)
    theirs = {r[1]: r[2:6] for r in k.execute("pragma table_info(silo)")}
    assert {n: ours[n] for n in theirs} == theirs
    assert [r[1] for r in c.execute("pragma table_info(silo)")][:13] == list(theirs)
    assert "silo_account_idx" in {r[1] for r in c.execute("pragma index_list(silo)")}
    idx_cols = [r[2] for r in c.execute("pragma index_info(silo_account_idx)")]
    assert idx_cols == ["username", "domain"]


def test_row_inserted_by_kamailio_is_delivered_by_us(tmp_path: Path) -> None:
    path = tmp_path / "m.db"

    async def setup() -> None:
        s = await opened(path)
        await s.close()

    run(setup)
    c = raw(path)
    rid = kamailio_insert(c)
    kamailio_insert(c, ctype="text/html", body=b"\x00\xff<b>x</b>")

    async def body() -> None:
        s = await opened(path)
        assert await s.count_for("bob", "127.0.0.1", 1795696706) == 2
        m = await s.claim_next("bob", "127.0.0.1", "A", 1795696706, 30)
        assert m is not None and m.id == rid
        assert m.body == BODY and len(m.body) == 27
        assert m.ctype == "text/plain"  # ctype_full is NULL: falls back to ctype
        assert m.extra_hdrs == "X-Test-Id: e5\r\n"
        assert (m.src_addr, m.dst_addr) == ("sip:alice@127.0.0.1", "sip:bob@127.0.0.1")
        assert (m.inc_time, m.exp_time, m.snd_time, m.callid, m.status) == (
            1795696705,
            1795955905,
            0,
            "",
            0,
        )
        assert await s.confirm(m.id, "A")
        m2 = await s.claim_next("bob", "127.0.0.1", "A", 1795696706, 30)
        assert m2 is not None and m2.ctype == "text/html" and m2.body == b"\x00\xff<b>x</b>"
        await s.release(m2.id)
        # Kamailio's m_dump does not check expiry; we do (expired: exp_time <= now).
        assert await s.claim_next("bob", "127.0.0.1", "B", 1795955905, 30) is None
        again = await s.claim_next("bob", "127.0.0.1", "B", 1795955904, 30)
        assert again is not None and again.id == m2.id
        await s.close()

    run(body)


def test_row_written_by_us_is_read_by_kamailio(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    payload = b"caf\xe9\x00\r\nend"

    async def body() -> list[int]:
        s = await opened(path)
        ids = [
            await s.store(
                msg(
                    1,
                    user="bob",
                    domain="127.0.0.1",
                    inc=100,
                    exp=200,
                    ctype="text/plain; charset=ISO-8859-1",
                    body=payload,
                    extra="X-Test-Id: e5\r\n",
                )
            ),
            await s.store(msg(2, user="bob", domain="127.0.0.1", inc=101, exp=300)),
        ]
        # A claim (our bookkeeping) does not hide the row from Kamailio.
        await s.claim_next("bob", "127.0.0.1", "A", 150, 30)
        await s.close()
        return ids

    ids = run(body)
    c = raw(path)
    rows = c.execute(K_SELECT, ("bob", "127.0.0.1", 0)).fetchall()
    assert [r[0] for r in rows] == ids
    assert rows[0] == (
        ids[0],
        "sip:alice@example.com",
        "sip:bob@127.0.0.1",
        payload,
        "text/plain",
        100,
        "X-Test-Id: e5\r\n",
    )
    # Kamailio's timer statements work on our rows too.
    assert c.execute(K_DELETE_EXPIRED, (200,)).rowcount == 1
    assert c.execute(K_DELETE_ID, (ids[1],)).rowcount == 1


def test_we_adopt_a_database_created_by_kamailio(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    k = sqlite3.connect(str(path), isolation_level=None)
    k.executescript(KAMAILIO_SQLITE_DDL)
    rid = kamailio_insert(k)
    k.close()

    async def body() -> None:
        s = await opened(path)  # migrates: adds our columns and the exp_time index
        m = await s.claim_next("bob", "127.0.0.1", "A", 1795696706, 30)
        assert m is not None and m.id == rid and m.body == BODY
        new = await s.store(msg(5, user="bob", domain="127.0.0.1"))
        assert new > rid
        await s.close()

    run(body)
    c = raw(path)
    assert c.execute(K_VERSION, ("silo",)).fetchone() == (8,)
    assert c.execute("select count(*) from version where table_name='silo'").fetchone() == (1,)
    assert len(c.execute(K_SELECT, ("bob", "127.0.0.1", 0)).fetchall()) == 2
    # Kamailio's INSERT keeps working after our columns were added.
    kamailio_insert(c, username="carol")
    assert migrate(c, "sqlite", "silo") == (LATEST_VERSION, LATEST_VERSION)
    # ...and, in the rebuilt table, never gets an id back that was used before.
    top = kamailio_insert(c, username="dave")
    assert c.execute(K_DELETE_ID, (top,)).rowcount == 1
    assert kamailio_insert(c, username="erin") == top + 1

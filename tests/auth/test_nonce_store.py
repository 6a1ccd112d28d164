"""Nonces (expiry, forgery, replay, bounded table), the secret file and the subscriber table."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sipsilo.auth.nonce import NonceManager, NonceState, load_secret
from sipsilo.auth.subscribers import SqliteSubscribers, full_ddl
from sipsilo.sip.digest import ha1

SECRET = b"0123456789abcdef0123456789abcdef"


def test_nonce_valid_then_stale_after_expiry() -> None:
    nm = NonceManager(SECRET, "example.com", expires=300)
    n = nm.issue(1000)
    assert nm.check(n, 1000) is NonceState.VALID
    assert nm.check(n, 1300) is NonceState.VALID
    assert nm.check(n, 1301) is NonceState.STALE


def test_nonce_forged_or_other_secret_or_realm_is_invalid() -> None:
    nm = NonceManager(SECRET, "example.com")
    n = nm.issue(1000)
    assert NonceManager(b"x" * 32, "example.com").check(n, 1000) is NonceState.INVALID
    assert NonceManager(SECRET, "other.org").check(n, 1000) is NonceState.INVALID
    tampered = n[:-4] + ("AAAA" if not n.endswith("AAAA") else "BBBB")
    for bad in (tampered, "", "!!!", n[:-8], "a" * 44):
        assert nm.check(bad, 1000) is NonceState.INVALID
    # a nonce from the future (beyond clock skew) is not accepted either
    assert nm.check(nm.issue(5000), 1000) is NonceState.INVALID


def test_nonce_shared_secret_verifies_across_instances() -> None:
    a, b = NonceManager(SECRET, "r"), NonceManager(SECRET, "r")
    assert b.check(a.issue(100), 100) is NonceState.VALID


def test_nc_must_increase_per_nonce() -> None:
    nm = NonceManager(SECRET, "r")
    n = nm.issue(0)
    assert nm.use(n, 1)
    assert not nm.use(n, 1)         # replay
    assert nm.use(n, 2)
    assert not nm.use(n, 1)
    other = nm.issue(0)
    assert nm.use(other, 1)          # separate counter per nonce


def test_nonce_without_qop_is_single_use() -> None:
    nm = NonceManager(SECRET, "r")
    n = nm.issue(0)
    assert nm.use(n, None)
    assert not nm.use(n, None)
    assert not nm.use(n, 99)


def test_bounded_table_never_reopens_a_replay() -> None:
    nm = NonceManager(SECRET, "r", max_tracked=3)
    nonces = [nm.issue(t) for t in range(5)]
    for n in nonces:
        assert nm.use(n, 1)
    assert nm.tracked == 3
    # the evicted ones are stale now, not fresh again
    assert nm.check(nonces[0], 10) is NonceState.STALE
    assert not nm.use(nonces[0], 1)
    assert nm.check(nonces[4], 10) is NonceState.VALID


def test_forget_expired() -> None:
    nm = NonceManager(SECRET, "r", expires=10)
    nm.use(nm.issue(0), 1)
    assert nm.forget_expired(5) == 0 and nm.forget_expired(11) == 1 and nm.tracked == 0


class _NoScan(dict):  # type: ignore[type-arg]
    def _scan(self, *a: object) -> object:
        raise AssertionError("the nonce table was scanned")

    items = keys = values = __iter__ = _scan  # type: ignore[assignment]


def test_forget_expired_takes_from_the_front_without_scanning() -> None:
    nm = NonceManager(SECRET, "r", expires=10)
    late, early = nm.issue(5), nm.issue(0)
    assert nm.use(late, 1) and nm.use(early, 1)   # used out of issue order
    nm._seen = _NoScan(nm._seen)
    assert nm.forget_expired(12) == 1 and nm.tracked == 1   # only the one issued at 0
    assert nm.check(late, 12) is NonceState.VALID and not nm.use(late, 1)
    assert nm.forget_expired(16) == 1 and nm.tracked == 0


def test_secret_file_created_once_private_and_shared(tmp_path: Path) -> None:
    s1 = load_secret(tmp_path)
    s2 = load_secret(tmp_path)
    assert s1 == s2 and len(s1) >= 32
    assert (tmp_path / "auth.secret").stat().st_mode & 0o077 == 0
    (tmp_path / "auth.secret").write_text("short")
    with pytest.raises(ValueError):
        load_secret(tmp_path)


def test_subscriber_store(tmp_path: Path) -> None:
    db = SqliteSubscribers(str(tmp_path / "s.db"))
    db.ensure_schema()
    db.ensure_schema()  # idempotent
    db.add("bob", "example.com", "example.com", "secret")
    with pytest.raises(ValueError):
        db.add("bob", "example.com", "example.com", "x")
    bob = db.get("bob", "example.com")
    assert bob is not None and bob.password == ""
    assert bob.ha1 == ha1("MD5", "bob", "example.com", "secret")
    assert bob.ha1b == ha1("MD5", "bob@example.com", "example.com", "secret")
    assert bob.hash_for("SHA-256", "example.com") == ha1("SHA-256", "bob", "example.com", "secret")
    assert bob.hash_for("MD5-sess", "example.com") == bob.ha1
    assert db.get("bob", "other.org") is None and db.count() == 1
    assert db.set_password("bob", "example.com", "example.com", "new")
    assert db.get("bob", "example.com").ha1 == ha1("MD5", "bob", "example.com", "new")  # type: ignore[union-attr]
    assert not db.set_password("eve", "example.com", "example.com", "x")
    assert db.remove("bob", "example.com") and not db.remove("bob", "example.com")
    db.close()


KAMAILIO_SUBSCRIBER_DDL = """
CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name));
CREATE TABLE subscriber (
    id INTEGER PRIMARY KEY NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL,
    password VARCHAR(64) DEFAULT '' NOT NULL,
    ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    ha1b VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT subscriber_account_idx UNIQUE (username, domain));
CREATE INDEX subscriber_username_idx ON subscriber (username);
INSERT INTO version (table_name, table_version) values ('subscriber','7');
"""


def test_adopts_a_kamailio_subscriber_table(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(KAMAILIO_SUBSCRIBER_DDL)
        # kamctl add with STORE_PLAINTEXT_PW=1, and one with hashes only
        conn.execute("INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
                     "VALUES ('alice', 'example.com', 'pw', '', '')")
        conn.execute("INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
                     "VALUES (?, 'example.com', '', ?, '')",
                     ("carol", ha1("MD5", "carol", "example.com", "pw2")))
    db = SqliteSubscribers(str(path))
    db.ensure_schema()
    alice, carol = db.get("alice", "example.com"), db.get("carol", "example.com")
    assert alice is not None and carol is not None
    assert alice.hash_for("SHA-256", "example.com") == ha1("SHA-256", "alice", "example.com", "pw")
    assert alice.hash_for("MD5", "example.com") == ha1("MD5", "alice", "example.com", "pw")
    assert carol.hash_for("MD5", "example.com") == ha1("MD5", "carol", "example.com", "pw2")
    assert carol.hash_for("SHA-256", "example.com") is None  # until 'sipsilo user passwd'
    db.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT table_version FROM version WHERE table_name='subscriber'"
                            ).fetchall() == [(7,)]
        # Kamailio's INSERT, which does not name our column, still works
        conn.execute("INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
                     "VALUES ('dave', 'example.com', '', 'x', 'y')")


@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "postgresql"])
def test_ddl_per_dialect(dialect: str) -> None:
    ddl = "\n".join(full_ddl("subscriber", dialect))  # type: ignore[arg-type]
    assert "ha1_sha256 VARCHAR(128) DEFAULT '' NOT NULL" in ddl
    assert "UNIQUE (username, domain)" in ddl
    if dialect == "sqlite":
        with sqlite3.connect(":memory:") as conn:
            for stmt in full_ddl("subscriber", "sqlite"):
                conn.execute(stmt)

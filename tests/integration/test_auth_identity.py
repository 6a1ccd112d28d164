"""Issue 11, finding 3: one identity per account, identical answers to every wrong guess.

An attacker who knows bob's HA1 formula (everybody does) can spell the digest
``username`` as ``bob``, ``bob@``, ``bob@127.0.0.1``, ``bob `` or ``BOB`` while computing
the response over bob's stored HA1. Every spelling that can succeed must draw from one
failure budget, and spellings that are not bob's account (a trailing space, another case:
RFC 3261 §19.1.4 user parts are case-sensitive) must never reach bob's row, whatever the
database's collation. A right password for an AoR that is not the user's gets exactly the
answer of a wrong password (no 403-vs-401 password oracle).

Each test runs against a real server; the backend ones on SQLite, MariaDB and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sipsilo.sip.digest import Credentials, ha1, parse_challenge, request_digest
from tests.integration.harness import ServerProcess
from tests.integration.test_auth import HOST, Client, add_user
from tests.silo.sqlservers import create_database, drop_database, server_url

Make = Callable[..., ServerProcess]
BACKENDS = ["sqlite", "mysql", "postgresql"]


class Raw(Client):
    """A UDP client that spells its digest username as it likes."""

    def register(self, aor_user: str, auth: str | None = None) -> str:
        return self.send("REGISTER", aor_user, auth=auth, call_id=f"ident-{self.port}")

    def answer(self, aor_user: str, username: str, password: str, ha1_user: str = "bob") -> str:
        """Challenge, then answer it as *username* over the HA1 of *ha1_user*."""
        challenge = self.register(aor_user)
        assert challenge.startswith("SIP/2.0 401 "), challenge
        values = [ln.split(":", 1)[1].strip() for ln in challenge.split("\r\n")
                  if ln.lower().startswith("www-authenticate:")]
        ch = next(c for c in map(parse_challenge, values) if c.algorithm == "MD5")
        uri = f"sip:{self.server.uri_host}"
        resp = request_digest("MD5", ha1("MD5", ha1_user, ch.realm, password), ch.nonce,
                              "REGISTER", uri, qop="auth", nc="00000001", cnonce="c0ffee")
        creds = Credentials(username, ch.realm, ch.nonce, uri, resp, "MD5", "auth",
                            "00000001", "c0ffee").to_header()
        return self.register(aor_user, creds)


def shape(reply: str) -> tuple[str, list[str]]:
    """What an attacker can compare: the status line and the header names, in order."""
    head = reply.split("\r\n\r\n", 1)[0].split("\r\n")
    return head[0], [ln.split(":", 1)[0].lower() for ln in head[1:]]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    dialect = request.param
    if dialect == "sqlite":
        yield None
        return
    server_url(dialect)  # skip (or fail under CI) when the server is down
    url, name = asyncio.run(create_database(dialect))
    yield url
    asyncio.run(drop_database(dialect, name))


def start(make_server: Make, tmp_path: Path, db_url: str | None, **settings: Any
          ) -> ServerProcess:
    data = tmp_path / "ident"
    sets = [f"msilo.db_url={db_url}"] if db_url else []
    add_user(data, f"bob@{HOST}", "secret", *sets)
    add_user(data, f"alice@{HOST}", "alicepw", *sets)
    extra = {"msilo.db_url": db_url} if db_url else {}
    return make_server(data_dir=data, **extra, **settings)


def test_three_spellings_of_bob_share_one_failure_budget(
        make_server: Make, tmp_path: Path) -> None:
    server = start(make_server, tmp_path, None, **{"auth.max_failures": 3})
    c = Raw(server)
    try:
        for spelling in ("bob", "bob@", f"bob@{HOST}"):
            assert c.answer("bob", spelling, "guess").startswith("SIP/2.0 401 ")
        # three failures of one account: blocked, whichever spelling comes next
        for spelling in ("bob", "bob@", f"bob@{HOST}", f"b%6Fb@{HOST}"):
            blocked = c.answer("bob", spelling, "secret")
            assert blocked.startswith("SIP/2.0 403 "), (spelling, blocked)
            assert "too many failed attempts" in blocked
    finally:
        c.close()


def test_right_password_for_another_aor_answers_as_a_wrong_password(
        make_server: Make, tmp_path: Path) -> None:
    server = start(make_server, tmp_path, None)
    c = Raw(server)
    try:
        wrong = c.answer("bob", "bob", "guess")
        right_elsewhere = c.answer("alice", "bob", "secret")
        assert shape(right_elsewhere) == shape(wrong) == (
            "SIP/2.0 401 Unauthorized", shape(wrong)[1])
        assert "www-authenticate" in shape(wrong)[1]
    finally:
        c.close()
    assert "authenticated as sip:bob@127.0.0.1 but claims sip:alice@127.0.0.1" in server.log()


def test_spellings_that_are_not_bobs_account_never_reach_his_row(
        make_server: Make, tmp_path: Path, db_url: str | None) -> None:
    """bob's right password under ``bob `` / ``BOB`` / a padded domain: a wrong guess.

    MariaDB's default collation compares ``'bob ' = 'bob'`` and ``'BOB' = 'bob'`` as
    true; the server must not take that row for the account the client named.
    """
    server = start(make_server, tmp_path, db_url, **{"auth.max_failures": 50})
    c = Raw(server)
    try:
        wrong = c.answer("bob", "bob", "guess")
        for spelling in ("bob ", "bob  ", "BOB", "Bob", f"bob@{HOST} ", f"bob @{HOST}"):
            reply = c.answer("bob", spelling, "secret")
            assert shape(reply) == shape(wrong), (spelling, reply)
        ok = c.answer("bob", "bob", "secret")
        assert ok.startswith("SIP/2.0 200 "), ok
    finally:
        c.close()


def test_padded_spellings_give_no_extra_guesses(
        make_server: Make, tmp_path: Path, db_url: str | None) -> None:
    """Once bob's budget is spent, no spelling tells a right password from a wrong one."""
    server = start(make_server, tmp_path, db_url, **{"auth.max_failures": 2})
    c = Raw(server)
    try:
        for _ in range(2):
            assert c.answer("bob", "bob", "guess").startswith("SIP/2.0 401 ")
        for spelling in ("bob ", "bob   ", "BOB", f"bob@{HOST} "):
            right = c.answer("bob", spelling, "secret")
            wrong = c.answer("bob", spelling, "guess")
            assert shape(right) == shape(wrong), (spelling, right, wrong)
            assert not right.startswith("SIP/2.0 200 ")
        blocked = c.answer("bob", "bob", "secret")
        assert blocked.startswith("SIP/2.0 403 ") and "too many failed attempts" in blocked
    finally:
        c.close()

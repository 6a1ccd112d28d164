"""The one spelling of an account (RFC 3261 §19.1.4), and what keys on it."""

from __future__ import annotations

import asyncio

import pytest

from sipsilo.auth.auto import AutoSwitch
from sipsilo.auth.identity import Identity, normalise_domain
from sipsilo.auth.nonce import NonceManager
from sipsilo.auth.policy import Authenticator, failure_key
from sipsilo.auth.subscribers import exact_row
from sipsilo.sip.uri import SipUri


@pytest.mark.parametrize("username", ["bob", "bob@", "bob@example.com", "bob@EXAMPLE.com",
                                      "b%6Fb", "%62%6f%62@example.com", "bob@example.com:5060"])
def test_spellings_of_bob_are_one_identity(username: str) -> None:
    who = Identity.from_digest(username, "example.com")
    assert who == Identity("bob", "example.com")
    assert who.key == "sip:bob@example.com" and str(who) == "bob@example.com"


@pytest.mark.parametrize("username", ["bob ", " bob", "BOB", "Bob", "bob@example.com ",
                                      "bob@other.example.com", "bob%20"])
def test_other_spellings_are_other_identities(username: str) -> None:
    assert Identity.from_digest(username, "example.com") != Identity("bob", "example.com")


def test_the_claimed_uri_normalises_the_same_way() -> None:
    uri = SipUri.parse("sip:b%6Fb@Example.COM:5062;transport=tcp")
    assert Identity.from_uri(uri) == Identity.from_digest("bob", "example.com")
    assert Identity.from_uri(SipUri.parse("sip:BOB@example.com")).user == "BOB"


def test_hosts_compare_by_value() -> None:
    assert normalise_domain("EXAMPLE.com") == "example.com"
    assert normalise_domain("::0001") == normalise_domain("[::1]") == "[::1]"
    assert Identity.from_uri(SipUri.parse("sip:bob@[::0001]")).domain == "[::1]"
    assert Identity.from_digest("bob@[::1]:5060", "x").domain == "[::1]"
    assert normalise_domain("127.0.0.1") == "127.0.0.1"


def test_key_is_unambiguous_text() -> None:
    # a decoded user may hold "@" or spaces; the key escapes them one way
    assert Identity.of("a%40b", "c").key == "sip:a%40b@c"
    assert Identity.of("a%40b", "c") != Identity.of("a", "b@c")
    assert Identity.of("bob%20", "c").key == "sip:bob%20@c"
    assert Identity.of("bad%zz", "c").user == "bad%zz"  # a bad escape names nobody


def test_failure_key_is_address_and_account() -> None:
    assert failure_key("192.0.2.1", Identity("bob", "example.com")) == \
        "192.0.2.1 sip:bob@example.com"


def test_exact_row_refuses_what_a_collation_would_match() -> None:
    row = (1, "bob", "Example.com", "", "h", "hb", "h256")
    assert exact_row([row], "bob", "example.com") is not None
    for user, domain in (("bob ", "example.com"), ("BOB", "example.com"),
                         ("bob", "example.com ")):
        assert exact_row([row], user, domain) is None
    assert exact_row([], "bob", "example.com") is None


def test_a_nonce_used_by_one_account_is_not_good_for_another() -> None:
    nm = NonceManager(b"s" * 32, "r")
    n = nm.issue(1000)
    assert nm.use(n, 1, "sip:bob@r")
    assert not nm.use(n, 2, "sip:alice@r")
    assert nm.use(n, 2, "sip:bob@r")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_auto_switch_looks_again_once_a_second_and_stays_on() -> None:
    clock, users, asked = Clock(), [0], []

    async def count() -> int:
        asked.append(clock.now)
        if users[0] < 0:
            raise OSError("database down")
        return users[0]

    made: list[Authenticator] = []

    def make() -> Authenticator:
        made.append(Authenticator(object(), "r", NonceManager(b"s" * 32, "r")))  # type: ignore[arg-type]
        return made[-1]

    switch = AutoSwitch(make, count, interval=1.0, clock=clock)

    async def polls() -> list[Authenticator | None]:
        out = [await switch.poll()]          # looked at start-up: not again yet
        clock.now = 1.0
        out.append(await switch.poll())      # empty table: off
        out.append(await switch.poll())      # within the second: not asked
        users[0] = -1
        clock.now = 2.0
        out.append(await switch.poll())      # outage: stays off
        users[0] = 1
        clock.now = 2.5
        out.append(await switch.poll())      # too soon after the last look
        clock.now = 3.0
        out.append(await switch.poll())      # a user: on
        users[0] = 0
        clock.now = 10.0
        out.append(await switch.poll())      # removing every user does not turn it off
        return out

    out = asyncio.run(polls())
    assert out[:5] == [None] * 5 and out[5] is made[0] and out[6] is made[0]
    assert asked == [1.0, 2.0, 3.0] and len(made) == 1

"""The dialog token maths (proxy.route_token): what a token binds, when it expires,
which keys verify it."""

from __future__ import annotations

import pytest

from sipsilo.proxy.route_token import RouteKeys, route_targets, target_of
from sipsilo.sip.uri import SipUri

NOW = 1_800_000_000.0
DAY = 86400
CALLER = target_of(SipUri.parse("sip:alice@192.0.2.1:5062"))
CALLEE = target_of(SipUri.parse("sip:bob@198.51.100.7;transport=tcp"))
FOREIGN = target_of(SipUri.parse("sip:victim@203.0.113.9"))


@pytest.fixture
def keys() -> RouteKeys:
    return RouteKeys(b"0123456789abcdef0123456789abcdef", DAY)


def caller_token(keys: RouteKeys, now: float = NOW) -> str:
    return keys.for_caller("cid-1", "ftag", "ttag", CALLEE, "", now)


def callee_token(keys: RouteKeys, now: float = NOW) -> str:
    return keys.for_callee("cid-1", "ftag", CALLER, "", now)


def test_caller_token_carries_the_callers_requests(keys: RouteKeys) -> None:
    token = caller_token(keys)
    assert token.startswith("u")
    assert keys.check(token, "cid-1", "ftag", "ttag", CALLEE, "", NOW + 60)


def test_callee_token_carries_the_callees_requests(keys: RouteKeys) -> None:
    token = callee_token(keys)
    assert token.startswith("d")
    # the callee's requests: its own From tag (unknown at issue time), the caller's tag as To
    assert keys.check(token, "cid-1", "any-callee-tag", "ftag", CALLER, "", NOW + 60)


@pytest.mark.parametrize(
    ("call_id", "from_tag", "to_tag", "uri", "rest"),
    [
        ("cid-2", "ftag", "ttag", CALLEE, ""),          # another dialog
        ("cid-1", "other", "ttag", CALLEE, ""),         # another caller tag
        ("cid-1", "ftag", "other", CALLEE, ""),         # another callee (fork) tag
        ("cid-1", "ftag", "ttag", FOREIGN, ""),         # another Request-URI
        ("cid-1", "ftag", "ttag", CALLEE, FOREIGN),     # a Route entry added after ours
        ("cid-1", "ftag", "", CALLEE, ""),              # an initial request (no To tag)
        ("cid-1", "ttag", "ftag", CALLEE, ""),          # the other direction's tags
    ],
)
def test_caller_token_is_worthless_for_any_other_request(
        keys: RouteKeys, call_id: str, from_tag: str, to_tag: str, uri: str, rest: str) -> None:
    assert not keys.check(caller_token(keys), call_id, from_tag, to_tag, uri, rest, NOW + 1)


def test_callee_token_binds_the_callers_contact_and_tag(keys: RouteKeys) -> None:
    token = callee_token(keys)
    assert not keys.check(token, "cid-1", "x", "ftag", FOREIGN, "", NOW + 1)
    assert not keys.check(token, "cid-1", "x", "other", CALLER, "", NOW + 1)
    assert not keys.check(token, "cid-1", "x", "", CALLER, "", NOW + 1)


def test_direction_cannot_be_switched(keys: RouteKeys) -> None:
    token = callee_token(keys)
    flipped = "u" + token[1:]
    assert not keys.check(flipped, "cid-1", "x", "ftag", CALLER, "", NOW + 1)
    assert not keys.check(flipped, "cid-1", "ftag", "x", CALLER, "", NOW + 1)


def test_token_expires_after_its_lifetime(keys: RouteKeys) -> None:
    token = caller_token(keys)
    assert keys.check(token, "cid-1", "ftag", "ttag", CALLEE, "", NOW + DAY - 1)
    assert not keys.check(token, "cid-1", "ftag", "ttag", CALLEE, "", NOW + DAY)


def test_forged_expiry_or_mac_is_refused(keys: RouteKeys) -> None:
    token = caller_token(keys)
    stamp, mac = token[1:].split(".")
    later = f"u{int(stamp, 16) + 3600:x}.{mac}"
    assert not keys.check(later, "cid-1", "ftag", "ttag", CALLEE, "", NOW + 1)
    bad_mac = f"u{stamp}.{'0' * len(mac)}"
    assert not keys.check(bad_mac, "cid-1", "ftag", "ttag", CALLEE, "", NOW + 1)
    for junk in ("", "u", "u.", "uzz.abc", "x" + token[1:], token + "0"):
        assert not keys.check(junk, "cid-1", "ftag", "ttag", CALLEE, "", NOW + 1)


def test_key_rotation_keeps_the_previous_key(keys: RouteKeys) -> None:
    # issued at the very end of a key period: verified in the next one
    end_of_period = (NOW // DAY + 1) * DAY - 1
    token = caller_token(keys, end_of_period)
    assert keys.check(token, "cid-1", "ftag", "ttag", CALLEE, "", end_of_period + DAY - 10)


def test_another_secret_does_not_verify(keys: RouteKeys) -> None:
    other = RouteKeys(b"another secret of thirty-two by", DAY)
    assert not other.check(caller_token(keys), "cid-1", "ftag", "ttag", CALLEE, "", NOW + 1)


def test_each_key_period_signs_differently(keys: RouteKeys) -> None:
    # the same fields and expiry, issued under two periods' keys: the MACs differ
    a = keys._mac(1, "u", 5, ("x",))
    b = keys._mac(2, "u", 5, ("x",))
    assert a != b


def test_target_spelling_does_not_matter() -> None:
    a = SipUri.parse("sip:bob@127.0.0.1:5060;transport=UDP;ob")
    b = SipUri.parse("sip:bob@127.0.0.1.")
    assert target_of(a) == target_of(b)
    assert target_of(SipUri.parse("sip:bob@127.0.0.1:5061")) != target_of(b)
    assert target_of(SipUri.parse("sip:eve@127.0.0.1")) != target_of(b)
    assert target_of("tel:+123") == ""
    assert route_targets([a, b]) == f"{target_of(a)},{target_of(b)}"

from __future__ import annotations

import dataclasses

import pytest

from sipsilo.sip import ParseError, SipUri
from sipsilo.sip.uri import canonical_host, escape, parse_uri, unescape


def test_full_uri() -> None:
    u = SipUri.parse("SIPS:Al%69ce:s3cr%65t@Example.COM:5061;Transport=TCP;lr;maddr=1.2.3.4"
                     "?Subject=hi%20there&Priority=urgent")
    assert u.scheme == "sips" and u.user == "Alice" and u.password == "s3cret"
    assert u.host == "example.com" and u.port == 5061
    assert u.params == (("transport", "TCP"), ("lr", None), ("maddr", "1.2.3.4"))
    assert u.headers == (("Subject", "hi there"), ("Priority", "urgent"))
    assert u.param("lr") == "" and u.param("LR") == "" and u.param("x") is None
    assert u.has_param("maddr") and not u.has_param("ttl")
    assert u.transport == "tcp" and u.maddr == "1.2.3.4"
    assert str(u) == ("sips:Alice:s3cret@example.com:5061;transport=TCP;lr;maddr=1.2.3.4"
                      "?Subject=hi%20there&Priority=urgent")
    assert SipUri.parse(str(u)) == u


def test_minimal_and_transport_defaults() -> None:
    u = SipUri.parse("sip:example.com")
    assert u.user is None and u.port is None and u.params == () and u.transport == "udp"
    assert SipUri.parse("sips:example.com").transport == "tls"
    assert str(u) == "sip:example.com" and u.aor() == "sip:example.com"
    assert u.hostport() == "example.com"


def test_ipv6() -> None:
    u = SipUri.parse("sip:bob@[2001:DB8::10]:5070;transport=udp")
    assert u.host == "2001:db8::10" and u.port == 5070 and u.host_is_ip
    assert u.hostport() == "[2001:db8::10]:5070"
    assert str(u) == "sip:bob@[2001:db8::10]:5070;transport=udp"
    assert u.aor() == "sip:bob@[2001:db8::10]"
    assert SipUri.parse("sip:[::1]").host == "::1"


def test_host_is_ip() -> None:
    assert SipUri.parse("sip:1.2.3.4").host_is_ip
    assert not SipUri.parse("sip:a.example").host_is_ip


def test_aor_strips_port_params_and_folds_sips() -> None:
    u = SipUri.parse("sips:%61lice@Example.com:5061;transport=tls")
    assert u.aor() == "sip:alice@example.com"
    assert SipUri.parse("sip:a%20b@x").aor() == "sip:a%20b@x"


def test_user_with_reserved_characters() -> None:
    u = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert u.user == "user;par=u@example.net" and u.params == ()
    assert str(u) == "sip:user;par=u%40example.net@example.com"
    assert SipUri.parse("sip:+1-555;phone-context=x@gw").user == "+1-555;phone-context=x"


def test_with_params_and_replace() -> None:
    u = SipUri.parse("sip:a@b;lr;transport=udp")
    v = u.with_params(lr=None, transport="tcp", maddr="10.0.0.1")
    assert v.params == (("transport", "tcp"), ("maddr", "10.0.0.1"))
    assert u.params == (("lr", None), ("transport", "udp"))  # frozen original
    assert u.with_params(ob=True).param("ob") == ""
    assert u.with_params({"x-y": "1"}).param("x-y") == "1"
    assert u.with_params(nothere=False) == u
    assert u.without_params("LR").params == (("transport", "udp"),)
    assert u.replace(port=5080).port == 5080
    assert dataclasses.replace(u, host="c").host == "c"
    with pytest.raises(dataclasses.FrozenInstanceError):
        u.host = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    ["sip:", "sip:@host", "sip:user@", "sip:host:", "sip:host:99999", "sip:host:12a",
     "sip:a b@host", "sip:[::1", "sip:[zz::1]", "sip:host;=x", "sip:host;a=",
     "sip:host?x", "sip:ho_st", "sip:-host", "sip:a..b", "sip:%zz@host", "sip:%4@host",
     "sip:<a@b>", 'sip:a"@b', "sip:host]"],
)
def test_bad_uris(bad: str) -> None:
    with pytest.raises(ParseError) as info:
        SipUri.parse(bad)
    assert info.value.status == 400


def test_unsupported_scheme_is_416() -> None:
    with pytest.raises(ParseError) as info:
        SipUri.parse("mailto:a@b")
    assert info.value.status == 416
    with pytest.raises(ParseError):
        SipUri.parse("no-colon")


def test_parse_uri_other_schemes() -> None:
    assert parse_uri("tel:+1-201-555-0123") == "tel:+1-201-555-0123"
    assert isinstance(parse_uri("SIP:a@b"), SipUri)
    for bad in ["1abc:x", ":x", "noscheme", "tel:a b", "a<b:c"]:
        with pytest.raises(ParseError):
            parse_uri(bad)


def test_escape_helpers() -> None:
    assert unescape("a%20b%2525") == "a b%25"
    assert unescape("%C3%A9") == "é"
    assert unescape("%E9") == "é"  # not UTF-8: Latin-1 fallback
    assert escape("a b@c", frozenset("abc")) == "a%20b%40c"
    assert escape("é", frozenset()) == "%C3%A9"
    with pytest.raises(ParseError):
        unescape("%")


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("[::FFFF:7f00:1]", "127.0.0.1"),
        ("::0001", "::1"),
        ("Example.COM.", "example.com"),
        ("LOCALHOST", "localhost"),
        ("256.1", "256.1"),          # not an address inet_aton reads: a name
        ("1.2.3.4.5", "1.2.3.4.5"),
        ("08.1", "08.1"),
        ("0x", "0x"),
    ],
)
def test_canonical_host_spellings(spelling: str, canonical: str) -> None:
    assert canonical_host(spelling) == canonical


@pytest.mark.parametrize("host", ["0-12", "0x", "1_0.0.0.1", "+1", "0x-1", "08"])
def test_host_that_only_int_would_read_stays_a_name(host: str) -> None:
    # Found by the URI fuzz target: "0-12" made canonical_host raise.
    assert canonical_host(host) == host

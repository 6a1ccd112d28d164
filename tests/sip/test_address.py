from __future__ import annotations

import pytest

from sipsilo.sip import NameAddr, ParseError, SipUri, parse_contacts


def test_name_addr_with_quoted_display() -> None:
    na = NameAddr.parse('"Bob \\"B\\" Smith" <sip:bob@b.example;lr>;tag=abc;Expires=30')
    assert na.display_name == 'Bob "B" Smith'
    assert isinstance(na.uri, SipUri) and na.uri.params == (("lr", None),)
    assert na.params == [("tag", "abc"), ("expires", "30")]
    assert na.tag == "abc" and na.expires == 30
    assert str(na) == '"Bob \\"B\\" Smith" <sip:bob@b.example;lr>;tag=abc;expires=30'
    assert NameAddr.parse(str(na)) == na


def test_token_display_and_no_space() -> None:
    assert NameAddr.parse("Alice  Smith <sip:a@b>").display_name == "Alice Smith"
    assert NameAddr.parse("caller<sip:c@d>").display_name == "caller"
    assert NameAddr.parse("<sip:c@d>").display_name is None
    assert NameAddr.parse('"" <sip:c@d>').display_name == ""


def test_addr_spec_params_belong_to_header() -> None:
    na = NameAddr.parse("sip:a@b;tag=1;user=phone")
    assert isinstance(na.uri, SipUri) and na.uri.params == ()
    assert na.params == [("tag", "1"), ("user", "phone")]
    assert str(na) == "<sip:a@b>;tag=1;user=phone"


def test_non_sip_uri_kept_as_text() -> None:
    na = NameAddr.parse("<tel:+123;phone-context=x>;tag=9")
    assert na.uri == "tel:+123;phone-context=x" and na.tag == "9"


def test_param_helpers_and_q() -> None:
    na = NameAddr.parse("<sip:a@b>;q=0.5;+sip.instance=\"<urn:uuid:1>\"")
    assert na.q == 0.5
    assert na.param("+sip.instance") == '"<urn:uuid:1>"'
    na.set_param("tag", "x")
    na.set_param("q", "1")
    na.set_param("ob", None)
    assert na.params[-2:] == [("tag", "x"), ("ob", None)] and na.param("ob") == ""
    na.remove_param("ob")
    assert na.param("ob") is None
    cp = na.copy()
    cp.set_param("tag", "y")
    assert na.tag == "x"
    assert NameAddr.parse("<sip:a@b>;q=abc").q is None
    assert NameAddr.parse("<sip:a@b>;expires=x").expires is None
    assert NameAddr.parse("<sip:a@b>").tag is None


@pytest.mark.parametrize(
    "bad",
    ["", "   ", '"unterminated <sip:a@b>', '"x" sip:a@b', "<sip:a@b", "< sip:a@b >",
     "Bell, Alexander <sip:a@b>", "<sip:a@b> junk", "sip:a@b?x=y", "<bad uri>",
     "sip:a b@c", "<sip:a@b>;;", "<>"],
)
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(ParseError):
        NameAddr.parse(bad)


def test_parse_contacts() -> None:
    assert parse_contacts(" * ") == "*"
    contacts = parse_contacts('"a,b" <sip:a@b>;q=0.1, sip:c@d;expires=60')
    assert contacts != "*"
    assert [c.display_name for c in contacts] == ["a,b", None]
    assert contacts[1].expires == 60

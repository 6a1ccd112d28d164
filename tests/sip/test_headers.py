from __future__ import annotations

import pytest

from sipsilo.sip import Headers, ParseError, canonical_name
from sipsilo.sip.grammar import parse_params, split_list, unquote
from sipsilo.sip.headers import strip_identity


@pytest.mark.parametrize(
    ("raw", "canon"),
    [("v", "Via"), ("V", "Via"), ("f", "From"), ("t", "To"), ("i", "Call-ID"),
     ("m", "Contact"), ("l", "Content-Length"), ("c", "Content-Type"), ("k", "Supported"),
     ("s", "Subject"), ("e", "Content-Encoding"), ("o", "Event"), ("u", "Allow-Events"),
     ("r", "Refer-To"), ("x", "Session-Expires"), ("y", "Identity"), ("b", "Referred-By"),
     ("a", "Accept-Contact"), ("call-id", "Call-ID"), ("CSEQ", "CSeq"),
     ("www-authenticate", "WWW-Authenticate"), ("X-Custom", "X-Custom")],
)
def test_canonical_name(raw: str, canon: str) -> None:
    assert canonical_name(raw) == canon


def test_case_insensitive_and_compact() -> None:
    h = Headers([("v", "SIP/2.0/UDP a"), ("VIA", "SIP/2.0/UDP b, SIP/2.0/UDP c")])
    assert "via" in h and "v" in h and "Route" not in h
    assert h.get("Via") == "SIP/2.0/UDP a"
    assert h.get_all("v") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert h.get_lines("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b, SIP/2.0/UDP c"]
    assert h.items() == [("Via", "SIP/2.0/UDP a"), ("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c")]
    assert h.get("X-Missing") is None and h.get("X-Missing", "d") == "d"


def test_comma_split_respects_quotes_and_angles() -> None:
    h = Headers([("Contact", '"Doe, J" <sip:a@b;x=1,2>, <sip:c@d>')])
    assert h.get_all("Contact") == ['"Doe, J" <sip:a@b;x=1,2>', "<sip:c@d>"]


@pytest.mark.parametrize("name", ["WWW-Authenticate", "Authorization", "Date", "X-Unknown",
                                  "Proxy-Authorization", "Subject"])
def test_non_list_headers_not_split(name: str) -> None:
    value = 'Digest realm="a,b", nonce="x", qop="auth"'
    assert Headers([(name, value)]).get_all(name) == [value]


def test_mutation() -> None:
    h = Headers([("Via", "1"), ("To", "t"), ("Via", "2"), ("X-A", "a")])
    v0 = h.version
    h.prepend("Via", "0")
    assert h.get_all("Via") == ["0", "1", "2"] and h.version > v0
    h.add("Route", "<sip:r>")
    assert h.items()[-1] == ("Route", "<sip:r>")
    h.prepend("Record-Route", "<sip:rr>")
    assert h.items()[0] == ("Record-Route", "<sip:rr>")
    assert h.remove_first("via") == "0"
    assert h.remove_first("Nope") is None
    h.set("Via", "only")
    assert h.get_all("Via") == ["only"]
    assert [n for n, _ in h.items()].index("Via") == 1  # kept at the first position
    h.set("Max-Forwards", "70")
    assert h.items()[-1] == ("Max-Forwards", "70")
    h.remove("x-a")
    assert "X-A" not in h
    h.set_all("Via", ["a", "b"])
    assert h.get_lines("Via") == ["a", "b"]
    assert len(h) == 6


def test_pop_first_value_on_comma_joined_line() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b"), ("Via", "SIP/2.0/UDP c")])
    assert h.pop_first_value("Via") == "SIP/2.0/UDP a"
    assert h.get_all("Via") == ["SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert h.pop_first_value("Via") == "SIP/2.0/UDP b"
    assert h.get_lines("Via") == ["SIP/2.0/UDP c"]
    assert h.pop_first_value("Route") is None


def test_copy_equality_and_unknown_preserved() -> None:
    h = Headers([("X-Weird", " ;;,, "), ("x-weird", "second")])
    c = h.copy()
    assert c == h
    c.add("X-Other", "1")
    assert c != h and len(h) == 2
    assert h.get_all("X-WEIRD") == [" ;;,, ", "second"]
    assert h.items()[1] == ("x-weird", "second")  # original spelling kept
    assert list(h) == h.items()
    assert "Headers(" in repr(h)
    assert h.__contains__(3) is False


def test_grammar_helpers() -> None:
    assert split_list(" a , b,,c ") == ["a", "b", "c"]
    with pytest.raises(ParseError, match="Unterminated quoted"):
        split_list('"abc, d')
    with pytest.raises(ParseError, match="Unterminated <>"):
        split_list("<sip:a@b, c")
    assert unquote(r'"a\"b\\c"') == 'a"b\\c'
    for bad in ['"abc', 'abc"', '"a"b"', '"ab\\"']:
        with pytest.raises(ParseError):
            unquote(bad)
    assert parse_params(";A=1 ; b ; c = \"x;y\";maddr=[::1]") == [
        ("a", "1"), ("b", None), ("c", '"x;y"'), ("maddr", "[::1]")]
    for bad in [";;", ";a=", ";a b", ";a=b c", ";=1", ';a="x']:
        with pytest.raises(ParseError):
            parse_params(bad)


def test_strip_identity_removes_every_identity_assertion() -> None:
    h = Headers([("Subject", "hi"), ("Remote-Party-ID", "<sip:a@x>"), ("y", "sig"),
                 ("P-Asserted-Identity", "<sip:a@x>"), ("n", "<https://x>"),
                 ("p-preferred-identity", "<sip:a@x>"), ("Diversion", "<sip:b@x>"),
                 ("P-Asserted-Identity", "<tel:+1>"), ("Privacy", "id")])
    removed = strip_identity(h)
    assert len(removed) == 7
    assert h.items() == [("Subject", "hi"), ("Privacy", "id")]
    assert strip_identity(h) == []

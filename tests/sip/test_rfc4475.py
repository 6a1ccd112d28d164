"""RFC 4475 torture tests, one data file per message (named as in the RFC).

The files are CRLF-terminated transcriptions; where the RFC uses <hexXX>
escapes the file holds the raw bytes.  mpart01's binary body part is a
deterministic stand-in of the same length (with NULs and CR/LF in it), since
what matters for the parser is framing binary data by Content-Length.
"""

from __future__ import annotations

import pathlib

import pytest

from sipsilo.sip import ParseError, Request, Response, SipUri, error_response, parse_message

DATA = pathlib.Path(__file__).parent / "rfc4475"

VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
    "semiuri", "transports", "mpart01", "unreason", "noreason",
    # Syntactically valid; any objection belongs to a higher layer (see below).
    "badbranch", "bcast", "bext01", "cparam01", "cparam02", "inv2543", "invut",
    "regaut01", "regescrt", "sdp01", "unksm2", "zeromf",
]

# vector -> (status, reason fragment, answerable)
REFUSED_BY_PARSER = {
    "badinv01": (400, "Bad Via header", False),
    "clerr": (400, "Content-Length mismatch", True),
    "ncl": (400, "Bad Content-Length header", True),
    "scalar02": (400, "Bad CSeq header", True),
    "scalarlg": (400, "Bad CSeq header", False),  # a response: dropped
    "quotbal": (400, "Unterminated quoted string in To", True),
    "ltgtruri": (400, "Bad Request-URI", True),
    "lwsruri": (400, "Bad request line", True),
    "lwsstart": (400, "Bad request line", True),
    "trws": (400, "Bad request line", True),
    "escruri": (400, "Headers in Request-URI", True),
    "baddate": (400, "Bad Date header", True),
    "regbadct": (400, "not in <> in Contact", True),
    "badaspec": (400, "Bad URI in To header", True),
    "baddn": (400, "Bad display name in From", True),
    "badvers": (505, "Version Not Supported", True),
    "mismatch01": (400, "CSeq method does not match", True),
    # RFC prefers 501 here; 400 is explicitly acceptable and is what we give.
    "mismatch02": (400, "CSeq method does not match", True),
    "bigcode": (400, "Bad status code", False),
    "insuf": (400, "Missing From header", False),
    "unkscm": (416, "Unsupported URI Scheme", True),
    # Known but atypical scheme: we route only sip/sips/tel, so 416 as the RFC allows.
    "novelsc": (416, "Unsupported URI Scheme", True),
    "mcl01": (400, "Multiple Content-Length headers", True),
    "multi01": (400, "Multiple From headers", True),
}

# Vectors the parser accepts on purpose, and who answers what.
HIGHER_LAYER = {
    "badbranch": "transaction layer: branch 'z9hG4bK' without id -> RFC 2543 matching",
    "bcast": "transport/stack: response Via to 255.255.255.255 is not routed back",
    "bext01": "routing: 420 Bad Extension for Proxy-Require (Require is passed on by proxy)",
    "unksm2": "registrar: non-SIP To/From AoR -> 404/400; parser keeps the URIs as text",
    "invut": "UA concern (415); a proxy relays it",
    "regaut01": "registrar auth: unknown Authorization scheme -> 401 challenge",
    "zeromf": "proxy: 483 Too Many Hops (OPTIONS addressed to us may be answered)",
    "sdp01": "UA concern (406); a proxy relays it",
    "regescrt": "registrar: Contact with escaped Route header is stored as given",
    "inv2543": "accepted for RFC 2543 compatibility (no Max-Forwards/branch/Content-Length)",
    "cparam01": "registrar: 'unknownparam' is a Contact header param",
    "cparam02": "registrar: 'unknownparam' is a URI param",
}


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def test_all_vectors_present() -> None:
    names = {p.stem for p in DATA.glob("*.dat")}
    assert names == set(VALID) | set(REFUSED_BY_PARSER)
    assert len(names) == 49
    assert set(HIGHER_LAYER) <= set(VALID)


@pytest.mark.parametrize("name", VALID)
def test_valid_vectors_parse(name: str) -> None:
    msg = parse_message(load(name))
    assert msg.vias
    assert msg.call_id
    assert msg.from_ is not None and msg.to is not None
    # Every accepted message survives serialise -> parse with equal fields.
    again = parse_message(msg.serialise())
    assert type(again) is type(msg)
    assert again.call_id == msg.call_id
    assert again.cseq == msg.cseq
    assert again.from_ == msg.from_
    assert again.to == msg.to
    assert again.vias == msg.vias
    assert again.body == msg.body
    if isinstance(msg, Request):
        assert isinstance(again, Request)
        assert again.method == msg.method and again.uri == msg.uri


@pytest.mark.parametrize("name", sorted(REFUSED_BY_PARSER))
def test_invalid_vectors_refused(name: str) -> None:
    status, reason, answerable = REFUSED_BY_PARSER[name]
    with pytest.raises(ParseError) as info:
        parse_message(load(name))
    assert info.value.status == status
    assert reason in info.value.reason
    assert info.value.answerable is answerable


def test_wsinv_fields() -> None:
    msg = parse_message(load("wsinv"))
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "vivekg" and msg.uri.host == "chair-dnrc.example.com"
    assert msg.uri.params == (("unknownparam", None),)
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display_name == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert msg.cseq == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    contacts = msg.contacts
    assert contacts != "*"
    assert contacts[0].display_name == 'Quoted string ""'
    assert contacts[0].params == [("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")]
    assert msg.routes[0].uri == SipUri.parse(
        "sip:services.example.com;lr;unknownwith=value;unknown-no-value")
    assert len(msg.body) == 150


def test_intmeth_fields() -> None:
    msg = parse_message(load("intmeth"))
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.param("fromparam''~+*_!.-%") == '"работающий"'
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.max_forwards == 255
    value = msg.headers.get("extensionHeader-!.%*+_`'~")
    assert value is not None
    assert value.encode("utf-8", "surrogateescape") == bytes.fromhex("EFBBBFE5A4A7E5819CE99BBB")


def test_escapes() -> None:
    esc01 = parse_message(load("esc01"))
    assert isinstance(esc01, Request) and isinstance(esc01.uri, SipUri)
    assert esc01.uri.user == "sips:user@example.com"
    assert isinstance(esc01.to.uri, SipUri) and esc01.to.uri.user == "user"
    assert isinstance(esc01.from_.uri, SipUri) and esc01.from_.uri.user == "I have spaces"
    contacts = esc01.contacts
    assert contacts != "*"
    curi = contacts[0].uri
    assert isinstance(curi, SipUri)
    assert curi.user == "caller"
    # Unescaping is never recursive: %25%34%31 is "%41", not "A".
    assert curi.params == (("lr", None), ("name", "value%41"))

    escnull = parse_message(load("escnull"))
    assert isinstance(escnull.to.uri, SipUri)
    assert escnull.to.uri.user == "null-\x00-null"
    contacts = escnull.contacts
    assert contacts != "*"
    users = [c.uri.user for c in contacts if isinstance(c.uri, SipUri)]
    assert users == ["\x00", "\x00\x00"]

    esc02 = parse_message(load("esc02"))
    assert isinstance(esc02, Request)
    assert esc02.method == "RE%47IST%45R"
    assert esc02.to.display_name == "%Z%45"
    assert esc02.vias[0].branch == "z9hG4bK209%fzsnel234"
    contacts = esc02.contacts
    assert contacts != "*" and len(contacts) == 2
    assert esc02.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_other_valid_details() -> None:
    assert parse_message(load("lwsdisp")).from_.display_name == "caller"
    longreq = parse_message(load("longreq"))
    assert len(longreq.vias) == 34
    assert [v.host for v in longreq.vias[:3]] == [
        "sip33.example.com", "sip32.example.com", "sip31.example.com"]
    assert longreq.vias[-1].received == "192.0.2.5"
    assert isinstance(longreq.to.uri, SipUri) and longreq.to.uri.port == 6000

    dbl = parse_message(load("dblreq"))
    assert isinstance(dbl, Request) and dbl.method == "REGISTER" and dbl.body == b""

    semi = parse_message(load("semiuri"))
    assert isinstance(semi, Request) and isinstance(semi.uri, SipUri)
    assert semi.uri.user == "user;par=u@example.net" and semi.uri.params == ()
    assert len(semi.headers.get_all("Accept")) == 6

    transports = parse_message(load("transports"))
    assert [v.transport for v in transports.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]

    mpart = parse_message(load("mpart01"))
    assert len(mpart.body) == 553 and b"\x00" in mpart.body
    assert mpart.vias[0].rport == "" and mpart.vias[0].port == 5070

    unreason = parse_message(load("unreason"))
    assert isinstance(unreason, Response) and unreason.status == 200
    assert unreason.reason.startswith("= 2**3 * 5**2 но сто")

    noreason = parse_message(load("noreason"))
    assert isinstance(noreason, Response) and noreason.status == 100 and noreason.reason == ""

    inv = parse_message(load("inv2543"))
    assert inv.max_forwards is None and inv.vias[0].branch is None
    assert inv.to.param("user") == "phone"
    assert inv.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")

    c1 = parse_message(load("cparam01")).contacts
    c2 = parse_message(load("cparam02")).contacts
    assert c1 != "*" and c2 != "*"
    assert c1[0].params == [("unknownparam", None)]
    assert isinstance(c2[0].uri, SipUri) and c2[0].uri.params == (("unknownparam", None),)

    unksm2 = parse_message(load("unksm2"))
    assert unksm2.to.uri == "isbn:2983792873"
    assert unksm2.from_.uri == "http://www.example.com"

    regesc = parse_message(load("regescrt")).contacts
    assert regesc != "*" and isinstance(regesc[0].uri, SipUri)
    assert regesc[0].uri.headers == (("Route", "<sip:sip.example.com>"),)

    assert parse_message(load("zeromf")).max_forwards == 0
    assert parse_message(load("badbranch")).vias[0].branch == "z9hG4bK"
    regaut = parse_message(load("regaut01"))
    assert regaut.headers.get_all("Authorization") == ["NoOneKnowsThisScheme opaque-data=here"]


@pytest.mark.parametrize("name", sorted(REFUSED_BY_PARSER))
def test_error_response_for_refusals(name: str) -> None:
    status, reason, answerable = REFUSED_BY_PARSER[name]
    data = load(name)
    with pytest.raises(ParseError) as info:
        parse_message(data)
    resp = error_response(data, info.value)
    if not answerable:
        assert resp is None
        return
    assert resp is not None
    assert resp.status == status
    assert reason in resp.reason
    raw = resp.serialise()
    assert raw.startswith(f"SIP/2.0 {status} ".encode())
    assert b"\r\nVia: " in raw and b"\r\nCall-ID: " in raw and b"\r\nCSeq: " in raw

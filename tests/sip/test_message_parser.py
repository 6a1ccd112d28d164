from __future__ import annotations

import pytest

from sipsilo.sip import (
    Headers,
    NameAddr,
    ParseError,
    Request,
    Response,
    SipUri,
    StreamFramer,
    Via,
    error_response,
    parse_message,
    reason_phrase,
)

MSG = (
    b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'f: "Alice" <sip:alice@example.com>;tag=123\r\n'
    b"t: <sip:bob@example.com>\r\n"
    b"i: abc@10.0.0.1\r\n"
    b"CSeq: 1 MESSAGE\r\n"
    b"c: text/plain;charset=utf-8\r\n"
    b"X-Foo: a, b\r\n"
    b"l: 5\r\n\r\nhello"
)


def test_fast_path_fields() -> None:
    m = parse_message(MSG)
    assert isinstance(m, Request)
    assert m.method == "MESSAGE" and m.uri == SipUri.parse("sip:bob@example.com")
    assert m.call_id == "abc@10.0.0.1" and m.cseq == (1, "MESSAGE")
    assert m.from_.tag == "123" and m.to.tag is None
    assert m.vias[0].branch == "z9hG4bKabc" and m.top_via is m.vias[0]
    assert m.max_forwards == 70 and m.content_type == "text/plain;charset=utf-8"
    assert m.body == b"hello" and m.expires is None and m.contacts == []
    assert m.headers.get("X-Foo") == "a, b"


def test_serialise_canonical_and_content_length() -> None:
    m = parse_message(MSG)
    m.body = b"hello world"
    out = m.serialise()
    assert out.startswith(b"MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP")
    assert b"\r\nFrom: " in out and b"\r\nCall-ID: abc@10.0.0.1\r\n" in out
    assert out.endswith(b"Content-Length: 11\r\n\r\nhello world")
    assert out.count(b"Content-Length") == 1
    assert bytes(m) == out
    again = parse_message(out)
    assert again.body == b"hello world" and again.headers.get("X-Foo") == "a, b"


def test_cache_invalidated_by_header_changes_and_setters() -> None:
    m = parse_message(MSG)
    assert m.to.tag is None
    m.headers.set("To", "<sip:bob@example.com>;tag=zz")
    assert m.to.tag == "zz"
    to = m.to
    to.set_param("tag", "yy")
    m.to = to
    assert m.to.tag == "yy"
    vias = m.vias
    vias.insert(0, Via("UDP", "proxy.example", 5060, [("branch", "z9hG4bKp")]))
    m.vias = vias
    assert [v.host for v in m.vias] == ["proxy.example", "10.0.0.1"]
    m.max_forwards = 69
    assert m.max_forwards == 69
    m.max_forwards = None
    assert m.max_forwards is None
    m.cseq = (2, "MESSAGE")
    m.call_id = "new"
    m.from_ = NameAddr.parse("<sip:x@y>;tag=1")
    assert (m.cseq, m.call_id, m.from_.tag) == ((2, "MESSAGE"), "new", "1")
    m.headers = Headers([("Call-ID", "other")])
    assert m.call_id == "other"


def test_make_response() -> None:
    raw = MSG.replace(b"v: SIP", b"Via: SIP/2.0/TCP p1;branch=z9hG4bKp1\r\nv: SIP")
    m = parse_message(raw)
    assert isinstance(m, Request)
    r = m.make_response(200, to_tag="t1")
    assert isinstance(r, Response) and r.reason == "OK"
    assert r.headers.get_lines("Via") == m.headers.get_lines("Via")
    assert r.to.tag == "t1" and r.from_ == m.from_ and r.cseq == m.cseq
    assert r.call_id == m.call_id
    assert m.make_response(100, to_tag="t1").to.tag is None
    tagged = parse_message(raw.replace(b"t: <sip:bob@example.com>", b"t: <sip:b@e>;tag=old"))
    assert isinstance(tagged, Request)
    assert tagged.make_response(486, "Busy", to_tag="new").to.tag == "old"
    out = r.serialise()
    assert out.startswith(b"SIP/2.0 200 OK\r\n") and out.endswith(b"Content-Length: 0\r\n\r\n")
    back = parse_message(out)
    assert isinstance(back, Response) and back.status == 200


def test_constructors() -> None:
    req = Request("OPTIONS", "sip:a@b", [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")])
    assert isinstance(req.uri, SipUri) and req.headers.get("v") is not None
    assert Request("OPTIONS", "tel:+1").uri == "tel:+1"
    assert "OPTIONS" in repr(req) and "200" in repr(Response(200))
    assert Response(404).reason == "Not Found" and Response(299, "Fine").reason == "Fine"
    assert req.copy().headers == req.headers and Response(200).copy().status == 200
    with pytest.raises(ParseError, match="Missing Call-ID"):
        _ = req.call_id
    with pytest.raises(ParseError, match="Missing CSeq"):
        _ = req.cseq


def test_reason_phrase() -> None:
    assert reason_phrase(200) == "OK" and reason_phrase(416) == "Unsupported URI Scheme"
    assert reason_phrase(505) == "Version Not Supported" and reason_phrase(483) == "Too Many Hops"
    assert reason_phrase(299) == "Success" and reason_phrase(499) == "Client Error"
    assert reason_phrase(999) == "Unknown"


def _bad(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_message(data)
    return info.value


def test_datagram_content_length_rules() -> None:
    assert parse_message(MSG + b"trailing junk").body == b"hello"  # §18.3 truncation
    no_cl = MSG.replace(b"l: 5\r\n", b"")
    assert parse_message(no_cl + b"more").body == b"hellomore"  # UDP: rest of datagram
    with pytest.raises(ParseError, match="Missing Content-Length"):
        parse_message(no_cl, stream=True)
    assert _bad(MSG.replace(b"l: 5", b"l: 50")).reason == "Content-Length mismatch"
    assert _bad(MSG.replace(b"l: 5", b"l: five")).reason == "Bad Content-Length header"
    assert _bad(MSG.replace(b"l: 5", b"l: 99999999999999999999")).status == 400


@pytest.mark.parametrize(
    ("old", "new", "status", "reason", "answerable"),
    [
        (b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE", 400, "CSeq method does not match", True),
        (b"CSeq: 1 MESSAGE", b"CSeq: x MESSAGE", 400, "Bad CSeq header", True),
        (b"CSeq: 1 MESSAGE", b"CSeq: 1", 400, "Bad CSeq header", True),
        (b"i: abc@10.0.0.1\r\n", b"", 400, "Missing Call-ID header", False),
        (b"i: abc@10.0.0.1", b"i: a b", 400, "Bad Call-ID header", True),
        (b"t: <sip:bob@example.com>\r\n", b"", 400, "Missing To header", False),
        (b"CSeq: 1 MESSAGE\r\n", b"", 400, "Missing CSeq header", False),
        (b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport", b"v: garbage",
         400, "Bad Via header", False),
        (b"Max-Forwards: 70", b"Max-Forwards: abc", 400, "Bad Max-Forwards header", True),
        (b"Max-Forwards: 70", b"Max-Forwards: 256", 400, "Bad Max-Forwards header", True),
        (b"SIP/2.0\r\nv", b"SIP/3.0\r\nv", 505, "Version Not Supported", True),
        (b"SIP/2.0\r\nv", b"HTTP/1.1\r\nv", 400, "Bad request line", True),
        (b"sip:bob@example.com SIP", b"im:bob@example.com SIP", 416, "Unsupported URI", True),
        (b"sip:bob@example.com SIP", b"sip:bob@ex%ample.com SIP", 400, "Bad Request-URI", True),
        (b"MESSAGE sip", b"MES(SAGE sip", 400, "Bad request method", True),
        (b"X-Foo: a, b", b"X-Foo a, b", 400, "Malformed header line", False),
        (b"X-Foo: a, b", b"X Foo: a, b", 400, "Malformed header name", False),
        # KELVIN SIGN lower-cases to "k", the compact Supported: still not a token
        (b"X-Foo: a, b", "\u212a: 100rel".encode(), 400, "Malformed header name", False),
        (b"X-Foo: a, b", b"Contact: <sip:a@b", 400, "Unterminated <>", True),
        (b"X-Foo: a, b", b"Date: yesterday", 400, "Bad Date header", True),
        (b"X-Foo: a, b", b"CSeq: 2 MESSAGE", 400, "Multiple CSeq headers", True),
    ],
)
def test_request_errors(
    old: bytes, new: bytes, status: int, reason: str, answerable: bool
) -> None:
    assert old in MSG
    e = _bad(MSG.replace(old, new, 1))
    assert (e.status, e.answerable) == (status, answerable)
    assert reason in e.reason


def test_folding_leading_crlf_and_bare_lf() -> None:
    folded = MSG.replace(b"X-Foo: a, b", b"X-Foo: a,\r\n\t b")
    assert parse_message(b"\r\n\r\n" + folded).headers.get("X-Foo") == "a, b"
    lf = MSG.replace(b"\r\n", b"\n")
    assert parse_message(lf).call_id == "abc@10.0.0.1"
    assert _bad(b"\r\n\r\n").reason == "Empty message"
    assert _bad(MSG.split(b"\r\n\r\n")[0]).reason == "Missing empty line after headers"
    assert _bad(b"MESSAGE sip:a@b SIP/2.0\r\n folded: x\r\n\r\n").answerable is False


def test_response_errors_never_answerable() -> None:
    resp = parse_message(MSG).make_response(200).serialise()
    assert isinstance(parse_message(resp), Response)
    for old, new in [(b"200 OK", b"20 OK"), (b"200 OK", b"700 X"), (b"SIP/2.0 200", b"SIP/3.0 200"),
                     (b"CSeq: 1 MESSAGE", b"CSeq: x"), (b"SIP/2.0 200 OK", b"SIP/2.0")]:
        e = _bad(resp.replace(old, new, 1))
        assert e.answerable is False
    ok = parse_message(resp.replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE"))
    assert ok.cseq == (1, "INVITE")  # responses carry any method


def test_error_response_helper() -> None:
    data = MSG.replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE")
    with pytest.raises(ParseError) as info:
        parse_message(data)
    r = error_response(data, info.value)
    assert r is not None and r.status == 400 and "CSeq" in r.reason
    assert r.headers.get("CSeq") == "1 INVITE"
    assert error_response(data, ParseError(400, "x", answerable=False)) is None
    assert error_response(b"garbage", ParseError(400, "x")) is None
    assert error_response(parse_message(MSG).make_response(200).serialise(),
                          ParseError(400, "x")) is None


def test_stream_framer() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n\r\n") == []
    assert f.feed(MSG[:40]) == [] and f.buffered == 40
    out = f.feed(MSG[40:] + b"\r\n" + MSG + MSG[:10])
    assert out == [MSG, MSG] and f.buffered == 10
    assert f.feed(MSG[10:]) == [MSG]
    for msg in out:
        assert parse_message(msg, stream=True).body == b"hello"


def test_stream_framer_errors() -> None:
    with pytest.raises(ParseError, match="Missing Content-Length"):
        StreamFramer().feed(MSG.replace(b"l: 5\r\n", b""))
    with pytest.raises(ParseError, match="Bad Content-Length"):
        StreamFramer().feed(MSG.replace(b"l: 5", b"l: -5"))
    with pytest.raises(ParseError, match="Multiple Content-Length"):
        StreamFramer().feed(MSG.replace(b"l: 5", b"l: 5\r\nContent-Length: 6"))
    with pytest.raises(ParseError) as info:
        StreamFramer(max_size=100).feed(MSG)
    assert info.value.status == 513
    big = StreamFramer(max_size=1000)
    with pytest.raises(ParseError) as info:
        big.feed(b"MESSAGE sip:a@b SIP/2.0\r\nX: " + b"a" * 2000)
    assert info.value.status == 513
    with pytest.raises(ParseError) as info:
        StreamFramer(max_size=1000).feed(MSG.replace(b"l: 5", b"l: 5000"))
    assert info.value.status == 513


def test_stream_framer_finds_a_message_fed_one_byte_at_a_time() -> None:
    f = StreamFramer()
    out = []
    for i in range(len(MSG) * 2):
        out += f.feed((MSG + MSG)[i:i + 1])
    assert out == [MSG, MSG] and f.buffered == 0


def test_stream_framer_refuses_a_long_header_block_while_it_is_read() -> None:
    """An unterminated head is refused once past the cap, and only that much is kept."""
    f = StreamFramer(max_size=100_000, max_header_size=1024)
    head = MSG.split(b"\r\n\r\n")[0] + b"\r\nX-Filler: "
    f.feed(head)
    with pytest.raises(ParseError) as info:
        for _ in range(2000):
            f.feed(b"a" * 10)
    assert (info.value.status, info.value.reason) == (513, "Headers Too Large")
    assert f.buffered <= 1024
    # What is kept is the whole lines within the cap: enough to answer.
    response = error_response(f.pending, info.value)
    assert response is not None and response.status == 513
    assert response.headers.get("Call-ID") == parse_message(MSG, stream=True).call_id
    # A complete head over the cap, in one piece, gets the same.
    with pytest.raises(ParseError) as info:
        StreamFramer(max_header_size=1024).feed(
            MSG.replace(b"l: 5", b"X-Filler: " + b"b" * 2000 + b"\r\nl: 5"))
    assert info.value.status == 513
    # A first line longer than the cap leaves nothing to answer from.
    f = StreamFramer(max_header_size=1024)
    with pytest.raises(ParseError):
        f.feed(b"MESSAGE sip:" + b"a" * 2000)
    assert f.pending == b"" and error_response(f.pending, ParseError(513, "x")) is None


def test_invalid_utf8_in_headers_is_refused_with_answerable_400() -> None:
    # A lone surrogate from surrogateescape cannot be encoded again downstream
    # (a To tag hash, the database): the parser must refuse it, answerably.
    for old, new in [(b'"Alice"', b'"Al\xffice"'), (b"i: abc@", b"i: a\xb1c@"),
                     (b"X-Foo: a, b", b"X-Foo: \xc3\x28")]:
        e = _bad(MSG.replace(old, new, 1))
        assert (e.status, e.reason, e.answerable) == (400, "Invalid UTF-8 in headers", True)
        r = error_response(MSG.replace(old, new, 1), e)
        assert r is not None and r.status == 400
    # Valid UTF-8 and binary bodies stay accepted.
    assert parse_message(MSG.replace(b'"Alice"', '"Älice"'.encode())).from_.display_name == "Älice"
    binary = MSG.replace(b"l: 5\r\n\r\nhello", b"l: 2\r\n\r\n\xff\x00")
    assert parse_message(binary).body == b"\xff\x00"

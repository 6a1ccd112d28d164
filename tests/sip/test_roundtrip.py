"""Property tests: whatever we serialise, we parse back to equal values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipsilo.sip import NameAddr, Request, Response, SipUri, Via, parse_message

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
token = st.text(alphabet=_ALNUM + "-.!%*_+`'~", min_size=1, max_size=12)
label = st.text(alphabet=_ALNUM, min_size=1, max_size=8)
hostname = st.lists(label, min_size=1, max_size=3).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.sampled_from(["::1", "2001:db8::10", "fe80::1:2:3", "2001:db8:0:0:1::"])
host = st.one_of(hostname, ipv4, ipv6)
any_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
    min_size=1, max_size=10)
pvalue = st.one_of(st.none(), any_text)
uris = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.one_of(st.none(), any_text),
    password=st.none(),
    host=host,
    port=st.one_of(st.none(), st.integers(0, 65535)),
    params=st.lists(st.tuples(token.map(str.lower), pvalue), max_size=3).map(tuple),
    headers=st.lists(st.tuples(any_text, any_text), max_size=2).map(tuple),
)
param_lists = st.lists(st.tuples(token.map(str.lower), st.one_of(st.none(), token)), max_size=3)
display = st.one_of(st.none(), st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=12))
addrs = st.builds(NameAddr, uri=uris, display_name=display, params=param_lists)
vias = st.builds(
    Via,
    transport=st.sampled_from(["UDP", "TCP", "TLS", "SCTP"]),
    host=host,
    port=st.one_of(st.none(), st.integers(0, 65535)),
    params=param_lists,
)


@given(uris)
def test_uri_roundtrip(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@given(addrs)
def test_name_addr_roundtrip(na: NameAddr) -> None:
    back = NameAddr.parse(str(na))
    assert back.uri == na.uri and back.params == na.params
    assert (back.display_name or None) == (na.display_name or None)


@given(vias)
def test_via_roundtrip(via: Via) -> None:
    assert Via.parse(str(via)) == via


@settings(max_examples=60)
@given(
    method=token.map(str.upper), uri=uris, frm=addrs, to=addrs,
    via_list=st.lists(vias, min_size=1, max_size=3),
    cseq=st.integers(0, 2**31 - 1), call_id=token,
    extra=st.lists(st.tuples(st.sampled_from(["X-A", "Subject", "User-Agent"]), token),
                   max_size=3),
    body=st.binary(max_size=64),
)
def test_request_roundtrip(
    method: str, uri: SipUri, frm: NameAddr, to: NameAddr, via_list: list[Via],
    cseq: int, call_id: str, extra: list[tuple[str, str]], body: bytes,
) -> None:
    headers = [("Via", str(v)) for v in via_list] + [
        ("From", str(frm)), ("To", str(to)), ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"), ("Max-Forwards", "70"), *extra]
    req = Request(method, uri.replace(headers=()), headers, body)
    for stream in (False, True):
        back = parse_message(req.serialise(), stream=stream)
        assert isinstance(back, Request)
        assert (back.method, back.uri, back.body) == (req.method, req.uri, body)
        assert back.vias == via_list and back.cseq == (cseq, method)
        assert back.from_.params == frm.params and back.to.uri == to.uri
        assert back.call_id == call_id
        assert [(n, v) for n, v in back.headers.items() if n != "Content-Length"] == \
            req.headers.items()
        resp = back.make_response(200, to_tag="t")
        rback = parse_message(resp.serialise())
        assert isinstance(rback, Response) and rback.vias == via_list


@given(status=st.integers(100, 699), reason=st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=20).map(str.strip))
def test_status_line_roundtrip(status: int, reason: str) -> None:
    headers = [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("From", "<sip:a@b>;tag=1"),
               ("To", "<sip:c@d>"), ("Call-ID", "x"), ("CSeq", "1 OPTIONS")]
    back = parse_message(Response(status, reason, headers).serialise())
    assert isinstance(back, Response) and (back.status, back.reason) == (status, reason)

"""workers.keys: which worker a datagram goes to."""

from __future__ import annotations

import zlib

import pytest

from sipsilo.sip.ids import loop_branch
from sipsilo.workers.keys import tag_for, worker_for

TOKEN = "a1b2c3d4"
N = 4


def owner(user: str, n: int = N) -> int:
    return zlib.crc32(user.encode()) % n


def req(method: str, ruri: str, to: str = "<sip:bob@example.com>", extra: str = "") -> bytes:
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n"
        f"To: {to}\r\nFrom: <sip:alice@example.com>;tag=1\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def resp(branch: str, via_name: str = "Via") -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"{via_name}: SIP/2.0/UDP 127.0.0.1:5060;rport=5060;branch={branch},"
        " SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKother\r\n"
        "To: <sip:bob@example.com>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 MESSAGE\r\n\r\n"
    ).encode()


def test_one_worker_takes_everything() -> None:
    assert worker_for(b"garbage", 1, TOKEN) == 0


@pytest.mark.parametrize("user", ["bob", "carol", "dave", "frank", "+4912345"])
def test_requests_go_by_the_request_uri_user(user: str) -> None:
    assert worker_for(req("MESSAGE", f"sip:{user}@example.com"), N, TOKEN) == owner(user)
    # port, parameters and another host change nothing
    invite = req("INVITE", f"sip:{user}@127.0.0.1:5070;transport=udp")
    assert worker_for(invite, N, TOKEN) == owner(user)


def test_register_goes_by_the_to_user() -> None:
    for user in ("bob", "carol", "dave", "frank"):
        data = req("REGISTER", "sip:example.com", to=f'"Someone" <sip:{user}@example.com>')
        assert worker_for(data, N, TOKEN) == owner(user)
        compact = data.replace(b"\r\nTo:", b"\r\nt :")
        assert worker_for(compact, N, TOKEN) == owner(user)


def test_invite_cancel_and_ack_meet_in_one_worker() -> None:
    uri = "sip:carol@example.com"
    got = {worker_for(req(m, uri, to="<sip:carol@example.com>;tag=x"), N, TOKEN)
           for m in ("INVITE", "CANCEL", "ACK")}
    assert got == {owner("carol")}


def test_escaped_user_is_the_same_user() -> None:
    assert worker_for(req("MESSAGE", "sip:%62ob@example.com"), N, TOKEN) == owner("bob")


@pytest.mark.parametrize("index", range(N))
def test_responses_go_to_the_worker_named_in_the_branch(index: int) -> None:
    branch = loop_branch(TOKEN, "sip:bob@10.0.0.9", tag_for(index))
    assert worker_for(resp(branch), N, TOKEN) == index
    assert worker_for(resp(branch, via_name="v"), N, TOKEN) == index
    assert worker_for(resp(branch, via_name="VIA "), N, TOKEN) == index


def test_foreign_branches_and_junk_are_stable() -> None:
    other = loop_branch("ffffffff", "sip:bob@10.0.0.9", tag_for(3))
    first = worker_for(resp(other), N, TOKEN)
    assert first == worker_for(resp(other), N, TOKEN)
    for junk in (b"", b"\r\n", b"SIP/2.0 200 OK\r\n\r\n", b"HELLO", b"\xff\xfe x y"):
        assert 0 <= worker_for(junk, N, TOKEN) < N
    # a bad tag from someone imitating our token falls back, in range
    fake = resp(f"z9hG4bK{TOKEN}.00000000.zz123")
    assert 0 <= worker_for(fake, N, TOKEN) < N


def test_tag_bounds() -> None:
    assert tag_for(0) == "00" and tag_for(63) == "3f"
    with pytest.raises(ValueError):
        tag_for(256)


def test_odd_but_legal_syntax_reaches_the_same_worker() -> None:
    # what sip.parser accepts must be read alike here
    folded = req("REGISTER", "sip:example.com", to="\r\n <sip:carol@example.com>")
    assert worker_for(folded, N, TOKEN) == owner("carol")
    quoted = req("REGISTER", "sip:example.com", to='"sip:x@y" <sip:carol@example.com>')
    assert worker_for(quoted, N, TOKEN) == owner("carol")
    addr_spec = req("REGISTER", "sip:example.com", to="sip:carol@example.com;tag=9")
    assert worker_for(addr_spec, N, TOKEN) == owner("carol")
    leading = b"\r\n\r\n" + req("CANCEL", "sip:carol@example.com")
    assert worker_for(leading, N, TOKEN) == owner("carol")
    branch = loop_branch(TOKEN, "sip:bob@10.0.0.9", tag_for(2))
    folded_via = resp(branch).replace(b"Via: SIP/2.0/UDP", b"Via:\r\n\tSIP/2.0/UDP")
    assert worker_for(folded_via, N, TOKEN) == 2
    assert worker_for(b"\r\n" + resp(branch), N, TOKEN) == 2

"""Test messages, built with the real parser."""

from __future__ import annotations

from sipsilo.sip.message import Request, Response
from sipsilo.sip.parser import parse_message

BRANCH = "z9hG4bK776asdhds"


def request(
    method: str = "MESSAGE",
    *,
    branch: str = BRANCH,
    transport: str = "UDP",
    sent_by: str = "192.0.2.1:5060",
    cseq: int = 314159,
    to_tag: str | None = None,
    uri: str = "sip:bob@example.com",
    extra: str = "",
) -> Request:
    to = "Bob <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by};branch={branch}\r\n"
        "Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKupstream\r\n"
        "Max-Forwards: 69\r\n"
        f"To: {to}\r\n"
        "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
        "Contact: <sip:alice@192.0.2.1>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n"
        "\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def ack(invite: Request, to_tag: str = "a6c85cf", *, branch: str = BRANCH) -> Request:
    """A hop-by-hop ACK for a 3xx-6xx (same branch as the INVITE by default)."""
    text = (
        f"ACK {invite.uri} SIP/2.0\r\n"
        f"Via: {invite.headers.get_all('Via')[0]}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: Bob <sip:bob@example.com>;tag={to_tag}\r\n"
        f"From: {invite.headers.get('From')}\r\n"
        f"Call-ID: {invite.call_id}\r\n"
        f"CSeq: {invite.cseq[0]} ACK\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    )
    if branch != BRANCH:
        text = text.replace(f"branch={BRANCH}", f"branch={branch}")
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def response(req: Request, status: int, to_tag: str | None = "a6c85cf") -> Response:
    return req.make_response(status, to_tag=None if status == 100 else to_tag)

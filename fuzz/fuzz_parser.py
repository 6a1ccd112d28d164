"""Fuzz target: whole messages (sip/parser.py) as datagrams and as a stream.

A message that parses is serialised and parsed again to the same start line,
headers and body; every derived header value the core reads (Call-ID, CSeq,
From/To, Via, Contact, Route, Expires, Max-Forwards) parses or raises
ParseError; error_response() builds an answer or None, never raises; the
stream framer cuts the same bytes fed in two pieces into the same messages.
"""

from __future__ import annotations

import contextlib

from harness import main

from sipsilo.sip.errors import ParseError
from sipsilo.sip.message import Message, Request
from sipsilo.sip.parser import StreamFramer, error_response, parse_message


def _derived(msg: object) -> None:
    for name in ("call_id", "cseq", "from_", "to", "vias", "top_via", "max_forwards",
                 "contacts", "routes", "record_routes", "expires", "content_type"):
        with contextlib.suppress(ParseError):
            getattr(msg, name)


def _fields(msg: Message) -> list[tuple[str, str]]:
    # serialise() writes Content-Length last, from the body
    return [(n, v) for n, v in msg.headers.items() if n != "Content-Length"]


def check(data: bytes) -> None:
    stream = bool(data) and data[0] % 2 == 1
    try:
        msg = parse_message(data, stream=stream)
    except ParseError as exc:
        error_response(data, exc)
        _framer(data)
        return
    _derived(msg)
    again = parse_message(msg.serialise(), stream=True)
    assert again.start_line() == msg.start_line(), (again.start_line(), msg.start_line())
    assert _fields(again) == _fields(msg), (_fields(again), _fields(msg))
    assert again.body == msg.body
    if isinstance(msg, Request):
        msg.make_response(400, "Bad Request")
    _framer(data)


def _framer(data: bytes) -> None:
    whole = StreamFramer(4096)
    pieces = StreamFramer(4096)
    try:
        one = whole.feed(data)
    except ParseError:
        return
    cut = len(data) // 2
    two = pieces.feed(data[:cut]) + pieces.feed(data[cut:])
    assert one == two, (one, two)


if __name__ == "__main__":
    main(check)

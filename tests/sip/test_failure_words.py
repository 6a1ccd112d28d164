"""How a failed answer is worded in the log: timeout, unreachable or refused."""

from __future__ import annotations

from sipsilo.sip.message import Request, failure_words


def _request() -> Request:
    return Request("MESSAGE", "sip:bob@127.0.0.1:5070", [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1"),
        ("From", "<sip:alice@127.0.0.1>;tag=a"), ("To", "<sip:bob@127.0.0.1>"),
        ("Call-ID", "c@127.0.0.1"), ("CSeq", "1 MESSAGE")])


def test_answers_made_up_locally_are_a_timeout_or_unreachable() -> None:
    # What the client transaction makes itself carries no To tag.
    assert failure_words(_request().make_response(408)) == "did not answer in time (timeout)"
    assert failure_words(_request().make_response(503)) == (
        "could not be reached (503 Service Unavailable)")


def test_answers_from_the_phone_are_a_refusal() -> None:
    phone_408 = _request().make_response(408, to_tag="uas")
    assert failure_words(phone_408) == "refused it with 408 Request Timeout"
    assert failure_words(_request().make_response(415, to_tag="uas")) == (
        "refused it with 415 Unsupported Media Type")

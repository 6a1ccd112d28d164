"""Exceptions raised by the protocol layer.

Every error carries the SIP status the server should answer with, so the
transport/stack can turn a failure into a response without knowing why it
happened.
"""

from __future__ import annotations


class SipError(Exception):
    """A protocol-level failure that maps onto a SIP response status."""

    status: int
    reason: str

    def __init__(self, status: int | str = 400, reason: str | None = None) -> None:
        # Accept SipError("Bad X") too: callers outside the parser mostly only
        # care about the phrase and 400 is the overwhelmingly common status.
        if isinstance(status, str):
            reason, status = status, 400
        if reason is None:
            from sipsilo.sip.status import reason_phrase

            reason = reason_phrase(status)
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class ParseError(SipError):
    """Malformed input.

    ``answerable`` is False when the message is so broken that Via, From, To,
    Call-ID or CSeq are unusable: no response can be built, so the server
    must silently drop it (RFC 3261 §8.2.6 needs all of them).
    """

    answerable: bool

    def __init__(
        self,
        status: int | str = 400,
        reason: str | None = None,
        answerable: bool = True,
    ) -> None:
        super().__init__(status, reason)
        self.answerable = answerable

"""The ACK a client transaction sends for a 3xx-6xx answer (RFC 3261 §17.1.1.3)."""

from __future__ import annotations

from sipsilo.sip.headers import Headers
from sipsilo.sip.message import Request, Response


def build_ack(invite: Request, response: Response) -> Request:
    """Build the hop-by-hop ACK for ``response`` to ``invite``.

    Request-URI, Call-ID, From, the single top Via (same branch, so the server
    transaction matches it) and the Route set come from the INVITE; To comes
    from the response, with the tag the answering element added; CSeq keeps the
    number with method ACK. No body.
    """
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0].strip())
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", invite.headers.get("Max-Forwards") or "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq[0]} ACK")
    return Request("ACK", invite.uri, headers)

"""Transaction matching keys (RFC 3261 §17.1.3, §17.2.3).

A key is a plain tuple of strings so the glue can use it in a dict. Keys of
RFC 3261 requests (magic-cookie branch) and of RFC 2543 requests carry a
different first element, so the two families never collide.
"""

from __future__ import annotations

from sipsilo.sip.message import Request, Response

MAGIC_COOKIE = "z9hG4bK"

# ACK (for a non-2xx) and CANCEL belong to, or point at, the INVITE transaction.
_INVITE_FAMILY = frozenset({"INVITE", "ACK", "CANCEL"})


def _top_via_branch(message: Request | Response) -> str:
    vias = message.vias
    if not vias:
        raise ValueError("message has no Via header")
    return vias[0].branch or ""


def _match_method(method: str) -> str:
    # §17.2.3: "the method of the request matches the one that created the
    # transaction, except for ACK, where the method ... is INVITE".
    return "INVITE" if method == "ACK" else method


def _server_key(request: Request, method: str) -> tuple[str, ...]:
    branch = _top_via_branch(request)
    top = request.vias[0]
    if branch.startswith(MAGIC_COOKIE):
        # sent-by as two fields: "host:port" text would be ambiguous for IPv6.
        port = "" if top.port is None else str(top.port)
        return ("3261", branch, top.host.lower(), port, method)
    # RFC 2543 fallback (§17.2.3, last paragraphs): Request-URI, tags, Call-ID,
    # CSeq number and the whole top Via. The To tag is left out for the INVITE
    # family: the INVITE had none, while its ACK carries the tag of our
    # response; CANCEL copies the INVITE's To. Requests that differ only in it
    # would share Call-ID, From tag, CSeq and Via: a retransmission anyway.
    to_tag = "" if request.method in _INVITE_FAMILY else (request.to.tag or "")
    return (
        "2543",
        str(request.uri),
        to_tag,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq[0]),
        method,
        str(top),
    )


def server_key(request: Request) -> tuple[str, ...]:
    """Key of the server transaction ``request`` belongs to (ACK maps to its INVITE).

    CANCEL gets its own key (method CANCEL): it is a transaction of its own.
    Raises ValueError when the request has no Via.
    """
    return _server_key(request, _match_method(request.method))


def cancel_target_key(cancel: Request) -> tuple[str, ...]:
    """Key of the INVITE server transaction that ``cancel`` cancels (§9.2)."""
    return _server_key(cancel, "INVITE")


def client_key(response: Response) -> tuple[str, ...]:
    """Key of the client transaction ``response`` belongs to (§17.1.3)."""
    return (_top_via_branch(response), response.cseq[1])


def request_client_key(request: Request) -> tuple[str, ...]:
    """Key under which to file the client transaction that sends ``request``.

    Equal to :func:`client_key` of every response to it.
    """
    return (_top_via_branch(request), request.method)

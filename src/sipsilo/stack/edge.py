"""The stateless edge: what happens to a message before any transaction.

Two jobs: stamp the top Via with where the request really came from (so the
response finds its way back through NAT), and answer a request we could not
parse with the error the parser named — when enough of it is readable to
build an answer at all. Anything else is dropped and logged; the server never
dies on input.
"""

from __future__ import annotations

from sipsilo.flow import Flow
from sipsilo.sip.errors import ParseError
from sipsilo.sip.ids import new_tag
from sipsilo.sip.message import Request
from sipsilo.sip.parser import error_response


def fix_via_received(request: Request, flow: Flow) -> None:
    """RFC 3261 §18.2.1 (received) and RFC 3581 (rport) on the top Via."""
    top = request.top_via
    if top is None:
        return
    top = top.copy()
    host, port = flow.remote
    changed = False
    # A received or rport the sender wrote itself is never trusted: left in
    # place it would send our answer wherever the sender liked (a reflection
    # to a third party) or to a value no socket takes (rport=junk raised).
    received = top.received
    if top.host != host or (received is not None and received != host):
        top.set_param("received", host)
        changed = True
    rport = top.rport
    if rport is not None and rport != str(port):
        top.set_param("rport", str(port))
        if top.received is None:
            top.set_param("received", host)
        changed = True
    if changed:
        request.replace_top_via(top)


def answer_unparsable(data: bytes, exc: ParseError, server: str | None) -> bytes | None:
    """The wire answer to a request the parser refused, or None to drop it."""
    response = error_response(data, exc)
    if response is None:
        return None
    to = response.headers.get("To") or ""
    if ";tag=" not in to.replace(" ", "").lower():
        # §8.2.6.2: a final response carries a To tag, even an error.
        response.headers.set("To", f"{to};tag={new_tag()}")
    if server:
        response.headers.add("Server", server)
    return response.serialise()

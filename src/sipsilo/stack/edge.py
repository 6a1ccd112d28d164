"""The stateless edge: what happens to a message before any transaction.

Two jobs: stamp the top Via with where the request really came from (so the
response finds its way back through NAT), and answer a request we could not
parse with the error the parser named — when enough of it is readable to
build an answer at all. Anything else is dropped and logged; the server never
dies on input.
"""

from __future__ import annotations

from sipsilo.sip.errors import ParseError
from sipsilo.sip.headers import canonical_name
from sipsilo.sip.ids import new_tag
from sipsilo.sip.message import Request
from sipsilo.transport.flow import Flow

_ECHOED = ("Via", "From", "To", "Call-ID", "CSeq")


def fix_via_received(request: Request, flow: Flow) -> None:
    """RFC 3261 §18.2.1 (received) and RFC 3581 (rport) on the top Via."""
    top = request.top_via
    if top is None:
        return
    top = top.copy()
    host, port = flow.remote
    changed = False
    if top.host != host:
        top.set_param("received", host)
        changed = True
    if top.has_param("rport") and not top.rport:
        top.set_param("rport", str(port))
        if top.received is None:
            top.set_param("received", host)
        changed = True
    if changed:
        # Replace only the top element: the other Vias stay byte-for-byte.
        request.headers.pop_first_value("Via")
        request.headers.prepend("Via", str(top))


def answer_unparsable(data: bytes, exc: ParseError, server: str | None) -> bytes | None:
    """A response to a request the parser refused, or None to drop it.

    Built from the raw header lines, because the parsed message does not
    exist: only the headers §8.2.6 echoes are needed, taken verbatim.
    """
    if not exc.answerable or data.startswith(b"SIP/"):
        return None
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    try:
        text = head.decode("utf-8", "replace")
    except Exception:  # pragma: no cover
        return None
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n")[1:]:
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += " " + raw.strip()
        else:
            lines.append(raw)
    found: dict[str, list[str]] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        try:
            canon = canonical_name(name.strip())
        except Exception:
            continue
        if canon in _ECHOED:
            found.setdefault(canon, []).append(value.strip())
    if not all(found.get(name) for name in _ECHOED):
        return None
    to = found["To"][0]
    if ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={new_tag()}"
    reason = exc.reason.replace("\r", " ").replace("\n", " ")
    out = [f"SIP/2.0 {exc.status} {reason}"]
    out += [f"Via: {v}" for v in found["Via"]]
    out += [f"From: {found['From'][0]}", f"To: {to}", f"Call-ID: {found['Call-ID'][0]}",
            f"CSeq: {found['CSeq'][0]}"]
    if server:
        out.append(f"Server: {server}")
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8", "replace")

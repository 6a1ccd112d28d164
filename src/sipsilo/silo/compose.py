"""Message composition for the silo: what is stored, what is sent back out.

Three conversions, all pure:

* `message_to_store`: a MESSAGE request → a `NewMessage` row (m_store), or a
  `Refusal` naming the SIP answer when the request cannot be stored;
* `delivery_request`: a stored row → the MESSAGE sent to the user's contact
  (m_dump), with the original sender, the original time and the body as it was;
* `offline_notice`: the "User [...] is offline" MESSAGE for the sender.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sipsilo.silo.store import NewMessage, StoredMessage
from sipsilo.sip.dates import ctime_prefix, format_rfc1123
from sipsilo.sip.headers import IDENTITY_HEADERS, Headers
from sipsilo.sip.ids import new_call_id, new_tag
from sipsilo.sip.message import Request
from sipsilo.sip.uri import SipUri, canonical_host

# Headers that describe the transport or the transaction, or that the
# delivery rebuilds itself; everything else in the MESSAGE (Subject,
# X-..., IMDN's Message-ID headers carried
# outside CPIM, Content-Encoding, which the stored body needs to be read,
# ...) is kept verbatim and re-emitted on delivery.
_NOT_KEPT = frozenset(
    h.lower()
    for h in (
        "Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length",
        "Content-Type", "Contact", "Route", "Record-Route", "Expires", "Date",
        "User-Agent", "Server", "Authorization", "Proxy-Authorization", "Allow",
        "Supported", "Require", "Proxy-Require", "Accept", "Accept-Encoding",
        "Accept-Language", "Path", "Min-Expires",
    )
)

# Identity assertions (and the sender's Privacy wishes about them): kept, and
# re-emitted on delivery where the recipient believes them, only when the
# MESSAGE came from an [auth] trusted network.
_IDENTITY = IDENTITY_HEADERS | {"privacy"}

# Indications of typing activity (RFC 3994) are worthless once the typist is
# gone: they are never stored.
NOT_STORED_TYPES = frozenset({"application/im-iscomposing+xml"})

OFFLINE_TEXT = "User [{uri}] is offline. The message will be delivered when user goes online."


@dataclass(frozen=True)
class Refusal:
    """Why a MESSAGE is not stored, as the SIP answer to give."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StoreLimits:
    expire_time: int
    max_body: int


def owner_uri(candidates: list[SipUri | str | None], to_uri: SipUri | str) -> SipUri | None:
    """The AoR a message is stored for (the seed's m_store mode rules).

    A candidate is taken only if it is a complete address of record: a user
    part and a host that is a name, not an IP address (an IP means it is a
    contact, not an AoR). The first such candidate wins; when none is, the To
    URI is used, as SER did.
    """
    for uri in candidates:
        if isinstance(uri, SipUri) and uri.user and not uri.host_is_ip:
            return uri
    return to_uri if isinstance(to_uri, SipUri) and to_uri.user else None


def message_key(request: Request, owner: SipUri) -> str:
    """What makes a stored MESSAGE the same one again: its Call-ID, CSeq number
    and From tag (RFC 3261 §8.2.2.2's request identity, minus the Via branch a
    client may renew on a re-send), and the owner it is stored for. A hash, so
    the unique index has a short fixed-size key on every backend."""
    parts = (request.call_id, str(request.cseq[0]), request.from_.tag or "", owner.aor())
    raw = "\x00".join(parts).encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw).hexdigest()


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _valid_media_type(value: str) -> bool:
    kind, slash, sub = media_type(value).partition("/")
    token = set("abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~")
    return bool(slash and kind and sub and set(kind) <= token and set(sub) <= token)


def message_to_store(
    request: Request, owner: SipUri, now: int, limits: StoreLimits, *, trusted: bool = False
) -> NewMessage | Refusal:
    """The row to store, or why not.

    *trusted*: the request came from an [auth] trusted network, so its identity
    headers (IDENTITY_HEADERS) are kept; otherwise they are dropped.
    """
    body = request.body
    ctype = request.content_type
    if not body:
        return Refusal(400, "Empty message body")
    if ctype is None or not ctype:
        return Refusal(400, "Missing Content-Type")
    if not _valid_media_type(ctype):
        return Refusal(415, "Unparsable Content-Type")
    if media_type(ctype) in NOT_STORED_TYPES:
        return Refusal(480, "Temporarily Unavailable - composing indication not stored")
    if len(body) > limits.max_body:
        return Refusal(413, f"Message body too large ({len(body)} > {limits.max_body} bytes)")
    ttl = limits.expire_time
    expires = request.expires
    if expires is not None and 0 < expires < ttl:
        ttl = expires  # the sender's own lifetime for the message wins when shorter
    extra = "".join(
        f"{name}: {value}\r\n"
        for name, value in request.headers.items()
        if name.lower() not in _NOT_KEPT
        and (trusted or name.lower() not in _IDENTITY)
    )
    from_uri = request.from_.uri
    to_uri = request.to.uri
    return NewMessage(
        src_addr=_plain(from_uri),
        dst_addr=_plain(to_uri),
        username=owner.user or "",
        domain=canonical_host(owner.host),
        inc_time=now,
        exp_time=now + ttl,
        ctype=ctype,
        body=body,
        extra_hdrs=extra,
        callid=request.call_id,
        msg_key=message_key(request, owner),
    )


def _plain(uri: SipUri | str) -> str:
    """A URI as stored in src_addr/dst_addr: no URI headers (they are for dialing)."""
    if isinstance(uri, SipUri):
        return str(uri.replace(headers=())) if uri.headers else str(uri)
    return uri


def delivery_call_id(msg: StoredMessage) -> str:
    # Rows inserted by Kamailio have no Call-ID; derive a stable one from the
    # row so every redelivery of the same row carries the same Call-ID and the
    # client can recognise a duplicate.
    return msg.callid or f"msilo-{msg.id}-{msg.inc_time}@{msg.domain or 'sipsilo'}"


def delivery_request(
    msg: StoredMessage, request_uri: SipUri, *, add_date: bool, user_agent: str | None
) -> Request:
    """The MESSAGE that delivers a stored row to the user's contact."""
    body = msg.body
    ctype = msg.ctype or "text/plain"
    headers = Headers()
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<{msg.src_addr}>;tag={new_tag()}")
    headers.add("To", f"<{msg.dst_addr}>")
    headers.add("Call-ID", delivery_call_id(msg))
    # A fixed CSeq with the fixed Call-ID: a redelivered row is recognisably
    # the same request to a client that keeps (Call-ID, CSeq) of what it saw.
    headers.add("CSeq", "1 MESSAGE")
    headers.add("Date", format_rfc1123(msg.inc_time))
    if user_agent:
        headers.add("User-Agent", user_agent)
    headers.add("Content-Type", ctype)
    for line in msg.extra_hdrs.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers.add(name.strip(), value.strip())
    # A coded (e.g. gzip) body cannot take a text prefix without being corrupted.
    coding = (headers.get("Content-Encoding") or "identity").strip().lower()
    if add_date and media_type(ctype) == "text/plain" and coding == "identity":
        # Kamailio's exact prefix, so users see what msilo always showed them.
        body = f"[Offline message - {ctime_prefix(msg.inc_time)}] ".encode() + body
    return Request("MESSAGE", request_uri, headers, body)


def offline_notice(
    original: Request, registrar: str, target: SipUri, user_agent: str | None
) -> Request:
    """SER's "User [...] is offline" MESSAGE, from the registrar address."""
    to_uri = original.to.uri
    text = OFFLINE_TEXT.format(uri=_plain(to_uri))
    headers = Headers()
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<{registrar}>;tag={new_tag()}")
    headers.add("To", f"<{_plain(original.from_.uri)}>")
    headers.add("Call-ID", new_call_id(target.host))
    headers.add("CSeq", "10 MESSAGE")
    if user_agent:
        headers.add("User-Agent", user_agent)
    headers.add("Content-Type", "text/plain")
    headers.add("Contact", f"<{registrar}>;msilo=yes")
    return Request("MESSAGE", target, headers, text.encode())

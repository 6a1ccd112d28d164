"""Dialog tokens: the `sr` parameter of our Record-Route (RFC 3261 §16.6 step 4).

An in-dialog request is relayed along its Route set only when it carries a
token of ours that was issued for exactly that dialog, that direction and
that destination; anyone can read a token off the wire, so a token must be
worthless for any other request.

Each side of a dialog learns its route set from a different message, so each
gets its own token, and each binds what the proxy knows when issuing it:

* ``d`` (for the callee, in the INVITE we forward): the Call-ID, the caller's
  From tag (the To tag of every request the callee sends back), the caller's
  Contact (their Request-URI) and the Route entries past us on the way back
  (the Record-Route entries the INVITE brought with it).
* ``u`` (for the caller, rewritten into each 1xx/2xx we pass upstream, as
  §16.7 step 4 allows): the Call-ID, both tags, the callee's Contact and the
  Route entries past us towards the callee (the Record-Route entries added
  downstream of us).

A request is checked against the fields of the direction its token names, so
a token lifted from one dialog (or one direction of it) cannot carry a
request to another Request-URI, along another route, or into another dialog.
The callee's token, which binds only values the caller chose, never reaches
the caller: every response we pass upstream carries the caller's token.

Each token expires (``lifetime``) and is keyed by the secret of the period it
was issued in: period keys are derived from the server secret, the key of the
current and of the previous period are accepted, so a key rotates every
``lifetime`` seconds without breaking a dialog it signed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipsilo.sip.uri import SipUri, canonical_host

DOWN = "d"  # carried by requests from the callee towards the caller
UP = "u"    # carried by requests from the caller towards the callee
_MAC_HEX = 20  # 80 bits: far beyond online guessing


def target_of(uri: SipUri | str | None) -> str:
    """What a Request-URI or Route entry sends a request to, in one spelling:
    user, host, port and transport (other parameters do not change where it
    goes, and UAs re-serialise them freely)."""
    if not isinstance(uri, SipUri):
        return ""
    default = 5061 if uri.scheme == "sips" else 5060
    transport = (uri.param("transport") or ("tls" if uri.scheme == "sips" else "udp")).lower()
    return f"{uri.scheme}:{uri.user or ''}@{canonical_host(uri.host)}:{uri.port or default};" \
           f"{transport}"


def route_targets(uris: Iterable[SipUri | str | None]) -> str:
    return ",".join(target_of(u) for u in uris)


@dataclass
class RouteKeys:
    """Issues and checks the tokens; ``secret`` is the server's long-term secret."""

    secret: bytes
    lifetime: int
    _keys: dict[int, bytes] = field(default_factory=dict, repr=False)

    def _key(self, period: int) -> bytes:
        key = self._keys.get(period)
        if key is None:
            key = hmac.new(self.secret, b"sipsilo route key %d" % period, hashlib.sha256).digest()
            if len(self._keys) > 8:
                self._keys.clear()
            self._keys[period] = key
        return key

    def _mac(self, period: int, direction: str, expires: int, fields: tuple[str, ...]) -> str:
        data = "\0".join((direction, str(expires), *fields)).encode("utf-8", "surrogateescape")
        return hmac.new(self._key(period), data, hashlib.sha256).hexdigest()[:_MAC_HEX]

    def _issue(self, direction: str, fields: tuple[str, ...], now: float) -> str:
        expires = int(now) + self.lifetime
        period = int(now) // self.lifetime
        return f"{direction}{expires:x}.{self._mac(period, direction, expires, fields)}"

    def for_callee(self, call_id: str, from_tag: str, caller: str, back: str, now: float) -> str:
        """The ``d`` token: *caller* is target_of(the caller's Contact), *back*
        route_targets(the Record-Route entries the INVITE arrived with)."""
        return self._issue(DOWN, (call_id, from_tag, caller, back), now)

    def for_caller(self, call_id: str, from_tag: str, to_tag: str, callee: str, onward: str,
                   now: float) -> str:
        """The ``u`` token: *callee* is target_of(the callee's Contact), *onward*
        route_targets(the Route entries past us towards the callee)."""
        return self._issue(UP, (call_id, from_tag, to_tag, callee, onward), now)

    def check(self, token: str, call_id: str, from_tag: str, to_tag: str, request_uri: str,
              rest: str, now: float) -> bool:
        """Whether an in-dialog request may ride *token*: its Call-ID, tags,
        target_of(Request-URI) and route_targets(the Route entries after ours)
        are those the token was issued for, and the token is still valid."""
        direction = token[:1]
        stamp, dot, mac = token[1:].partition(".")
        if not dot or len(mac) != _MAC_HEX or not to_tag:
            return False
        try:
            expires = int(stamp, 16)
        except ValueError:
            return False
        if expires <= now or expires > now + self.lifetime:
            return False
        if direction == UP:
            fields: tuple[str, ...] = (call_id, from_tag, to_tag, request_uri, rest)
        elif direction == DOWN:
            fields = (call_id, to_tag, request_uri, rest)
        else:
            return False
        issued = (expires - self.lifetime) // self.lifetime
        current = int(now) // self.lifetime
        if issued not in (current, current - 1):
            return False  # signed with a key that is no longer kept
        return hmac.compare_digest(mac, self._mac(issued, direction, expires, fields))

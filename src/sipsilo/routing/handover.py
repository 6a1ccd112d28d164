"""Reaching a connection another process holds: the flow owner.

A TCP, TLS or WebSocket connection lives in the one process that accepted it.
With several workers, bob's REGISTER over TCP may arrive at worker 1 while a
MESSAGE for him arrives at worker 2 (over UDP, or another connection). Every
worker has bob's binding (registrar.replicated), but only worker 1 can write
to his connection, so the binding's ``Flow`` names its *owner*: the SIP URI
of worker 1's private listener (TCP on an ephemeral loopback port). Worker 2
relays the MESSAGE to that URI as an ordinary proxy hop, with one Route entry
on top that names the flow and is signed with the server secret, the way a
Path entry (RFC 3327) names the edge proxy that holds a client's flow:

    Route: <sip:127.0.0.1:41234;transport=tcp;lr;flow=<flow>.<mac>>

Worker 1 checks the signature, takes the entry off and relays the request
over the connection, statefully: the phone's answer comes back to worker 2,
whose proxy transaction ends as with one process (200 to the sender; a 408,
a closed connection or any other failure goes to the failure route, which
stores the MESSAGE and answers 202). A connection closed meanwhile is
answered 430 Flow Failed (RFC 5626 §5.3).

The signature also covers the request it came on: the branch of the Via the
sending worker puts on top, Call-ID, CSeq number, From tag, the method (an
ACK or a CANCEL counts as its INVITE: they share its branch and Route, §9.1,
§17.1.1.3), a digest of the body (checked for every method but ACK and
CANCEL), the owner's process tag and the time it was made (good for
``MAX_AGE``). Someone who sees a hand-over go by between instances cannot put
its Route entry on a request of their own; what they can do is send the very
same request again within that time, which delivers a copy of a message the
user got already.

The hop is SIP on purpose: the same Route entry reaches a worker of another
instance once bindings say which instance holds them (the owner URI is then
that instance's reachable internal listener) with nothing but a different
address. The signature binds the flow (transport, peer address, connection
number) so a local process that can reach the loopback port cannot have us
write into an arbitrary connection.

The private listener carries hand-overs and nothing else: a request on it
that is not one, or whose entry does not check, is answered 403, and the
connection it came on is closed unless a signed hand-over came over it
before (routing.dispatch; transport.tcp ``hop_request``). Its connections
have a budget of their own (transport.stream ``hop_limits``).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import time
from collections.abc import Callable

from sipsilo.flow import STREAMS, Flow, Target
from sipsilo.sip.errors import ParseError
from sipsilo.sip.message import Request
from sipsilo.sip.uri import SipUri, format_host

_MAC_HEX = 24  # 96 bits
_BODY_HEX = 16  # 64 bits of the body's SHA-256: which body was signed
#: Seconds a signed entry is good for: its INVITE may ring up to fr_inv_timer
#: before its CANCEL comes, then 64*T1 of retransmissions; with slack for clocks.
MAX_AGE = 600
#: Seconds an entry may be dated ahead of our clock (another instance's clock).
MAX_AHEAD = 60


class BadHandover(Exception):
    """A flow Route entry naming us whose signature or contents do not check."""


class StaleFlow(Exception):
    """A flow Route entry for a connection of an earlier process on our address
    (restarted instance): that connection is gone, 430 Flow Failed."""


class FlowOwner:
    """This process's side of the hand-over: stamping flows, reaching other owners,
    and recognising requests handed to us."""

    def __init__(self, secret: bytes, uri: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(b"sipsilo flow owner\0" + secret).digest()
        self._clock = clock  # wall clock: entries travel between instances
        # "sip:127.0.0.1:PORT;transport=tcp" once the private listener runs;
        # None: one process, nobody else can hold a connection.
        self.uri = uri
        self._host_port: tuple[str, int] | None = None
        self._tag: str | None = None

    def listen(self, host: str, port: int, tag: str | None = None) -> None:
        """Our listener is up at host:port. *tag* (random per process) tells
        this process's flows from those of an earlier one on the same address
        (a fixed one between instances, or a worker's ephemeral port given out
        again after it died): it is part of the owner URI."""
        self.uri = f"sip:{format_host(host)}:{port};transport=tcp"
        if tag is not None:
            self.uri += f";o={tag}"
        self._host_port = (host, port)
        self._tag = tag

    def stamp(self, flow: Flow) -> Flow:
        """The flow as bindings keep it: a stream flow names this process as owner."""
        if self.uri is None or flow.transport not in STREAMS or flow.owner == self.uri:
            return flow
        return dataclasses.replace(flow, owner=self.uri)

    def is_hop(self, local: tuple[str, int]) -> bool:
        """Whether a message that arrived on *local* came in on our private listener."""
        return self._host_port is not None and local == self._host_port

    def elsewhere(self, flow: Flow) -> bool:
        return flow.owner is not None and flow.owner != self.uri

    def target(self, flow: Flow) -> Target | None:
        """Where to send a request for *flow*, owned by another process: its
        owner's listener, with the signed Route entry naming the flow."""
        assert flow.owner is not None
        try:
            owner = SipUri.parse(flow.owner)
        except ParseError:
            return None
        if owner.port is None:
            return None
        text = f"{flow.transport}|{flow.conn_id}|{flow.remote[0]}|{flow.remote[1]}"
        body = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
        # Signed per request, as it leaves with our Via on top (Target.route).
        return Target("tcp", owner.host, owner.port,
                      route=functools.partial(self._route, flow.owner, owner.param("o"), body))

    def _route(self, owner: str, tag: str | None, body: str, request: Request) -> str:
        stamp = f"{int(self._clock()):x}"
        digest = _digest(request.body)
        mac = self._mac(body, stamp, digest, tag, request)
        return f"<{owner};lr;flow={body}.{stamp}.{digest}.{mac}>"

    def _mac(self, body: str, stamp: str, digest: str, tag: str | None,
             request: Request) -> str:
        """The signature of a flow entry on *request* (ParseError if it lacks the
        headers every request has)."""
        top = request.top_via
        branch = top.branch if top is not None else None
        if not branch:
            raise ParseError("no branch in the top Via")
        method = "INVITE" if request.method in ("ACK", "CANCEL") else request.method
        text = "|".join((body, stamp, digest, tag or "", branch, method, request.call_id,
                         str(request.cseq[0]), request.from_.tag or ""))
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:_MAC_HEX]

    def taken(self, request: Request, arrived_on: tuple[str, int]) -> Target | None:
        """The flow a request handed to us must go out on, with its Route entry
        removed; None when it is no hand-over. Raises BadHandover for an entry
        that names our listener but does not check (or did not come in on it),
        StaleFlow for one signed for an earlier process on our address."""
        if self._host_port is None or "flow=" not in (request.headers.get("Route") or ""):
            return None
        routes = request.routes
        if not routes:
            return None
        uri = routes[0].uri
        if not isinstance(uri, SipUri) or uri.param("flow") is None:
            return None
        if (uri.host, uri.port) != self._host_port:
            return None
        if arrived_on != self._host_port:
            raise BadHandover("a flow Route entry on a public listener")
        parts = (uri.param("flow") or "").split(".")
        if len(parts) != 4:
            raise BadHandover("bad flow token")
        body, stamp, digest, mac = parts
        if not hmac.compare_digest(mac, self._mac(body, stamp, digest, uri.param("o"), request)):
            raise BadHandover("bad flow signature")
        try:
            age = self._clock() - int(stamp, 16)
        except ValueError:
            raise BadHandover("bad flow token") from None
        if not -MAX_AHEAD <= age <= MAX_AGE:
            raise BadHandover(f"flow entry made {int(age)} s ago")
        if request.method not in ("ACK", "CANCEL") and digest != _digest(request.body):
            raise BadHandover("flow entry signed for another body")
        if uri.param("o") != self._tag:
            raise StaleFlow("a connection of an earlier process on this address")
        try:
            text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
            transport, conn_id, host, port = text.split("|")
            target = Target(transport, host, int(port), conn_id=int(conn_id))
        except ValueError:
            raise BadHandover("bad flow token") from None
        request.headers.pop_first_value("Route")
        return target


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:_BODY_HEX]

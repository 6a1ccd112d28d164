"""From a new server transaction to the route, plus what no route decides.

CANCEL is answered here (RFC 3261 §9.2 and §16.10: 200 to the CANCEL, the
pending branches cancelled, 487 for the INVITE), and so are the stray ACKs
for 2xx and stray 2xx retransmissions, which a proxy forwards statelessly.
Everything else goes to the route function, the seed's by default.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sipsilo.flow import Flow, Target
from sipsilo.proxy.relay import Branch
from sipsilo.routing.context import RouteContext, strip_own_routes
from sipsilo.routing.handover import BadHandover, StaleFlow
from sipsilo.routing.services import Services
from sipsilo.sip.errors import ParseError
from sipsilo.sip.ids import new_branch
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri
from sipsilo.sip.via import Via
from sipsilo.stack.handles import ServerTransaction
from sipsilo.stack.resolve import ResolveError, resolve_uri
from sipsilo.transaction.keys import cancel_target_key

log = logging.getLogger(__name__)

Route = Callable[[RouteContext], Awaitable[None]]


class Dispatcher:
    def __init__(self, services: Services, route: Route) -> None:
        self.services = services
        self.route = route

    async def on_request(self, tx: ServerTransaction) -> None:
        if self.services.handover.is_hop(tx.flow.local):
            await self._on_hop(tx)
            return
        if tx.request.method == "CANCEL":
            await self._cancel(tx)
            return
        try:
            handed = self.services.handover.taken(tx.request, tx.flow.local)
        except (BadHandover, ParseError) as exc:
            log.warning("%s from %s refused: %s", tx.request.method, tx.flow, exc)
            tx.reply(403, "Forbidden")
            return
        except StaleFlow:
            self.services.counters.inc("handover_failed")
            tx.reply(430, "Flow Failed")
            return
        if handed is not None:
            await self._handed_over(tx, handed)
            return
        ctx = RouteContext(self.services, tx)
        if self._looped(tx.request):
            ctx.t_reply(482, "Loop Detected")
            return
        try:
            await self.route(ctx)
        except ParseError as exc:
            # A header the route needed was malformed: that is the client's error.
            ctx.t_reply(exc.status, exc.reason)
            return
        if not (ctx.replied or ctx.relayed or ctx.dropped) and tx.request.method != "ACK":
            # Neither answered, relayed nor dropped: the transaction would stay
            # in the table for ever (and the client retransmit for 32 s).
            name = getattr(self.route, "__qualname__", repr(self.route))
            log.warning("route %s.%s returned without answering %s %s: 500",
                        getattr(self.route, "__module__", "?"), name, tx.request.method,
                        tx.request.uri)
            ctx.t_reply(500, "Server Internal Error - request not handled")

    async def _on_hop(self, tx: ServerTransaction) -> None:
        """A request on our private listener (routing.handover): a signed
        hand-over, or the CANCEL of one (it carries the INVITE's Route, §9.1),
        or refused. The listener is no public interface: anything else is a
        stranger's, answered 403, and its connection is closed unless a signed
        hand-over proved it before (transport.tcp ``hop_request``)."""
        tcp = self.services.stack.transports.tcp
        try:
            handed = self.services.handover.taken(tx.request, tx.flow.local)
        except (BadHandover, ParseError) as exc:
            why = str(exc)
            handed = None
        except StaleFlow:
            tcp.hop_request(tx.flow.conn_id, signed=True)  # signed, by an earlier process
            self.services.counters.inc("handover_failed")
            tx.reply(430, "Flow Failed")
            return
        else:
            why = "not a hand-over"
        if handed is None:
            log.warning("%s on the hop listener from %s refused: %s", tx.request.method,
                        tx.flow, why)
            tx.reply(403, "Forbidden")
            tcp.hop_request(tx.flow.conn_id, signed=False)
            return
        tcp.hop_request(tx.flow.conn_id, signed=True)
        if tx.request.method == "CANCEL":
            await self._cancel(tx)
        else:
            await self._handed_over(tx, handed)

    async def _handed_over(self, tx: ServerTransaction, target: Target) -> None:
        """Another worker relays a request to a connection we hold
        (routing.handover): out over it, statefully, the answer back to it.
        No route runs: the sending worker's did."""
        svc = self.services
        request = tx.request
        if request.max_forwards is not None and request.max_forwards <= 0:
            tx.reply(483, "Too Many Hops")
            return
        if svc.stack.transports.tcp.of_flow(target.conn_id, (target.host, target.port)) is None:
            svc.counters.inc("handover_failed")
            tx.reply(430, "Flow Failed")
            return
        svc.counters.inc("taken_over")
        await svc.relay.relay(tx, request, [Branch(request.uri, target)])

    def _looped(self, request: Request) -> bool:
        """RFC 3261 §16.3 step 4: an initial request that carries one of our
        own branches for this very Request-URI (see sip.ids.loop_branch), or
        names our sent-by more than once, has come round through us before."""
        if request.to.tag:
            return False
        if self.services.stack.loops_back(request):
            return True
        try:
            vias = request.vias
        except ParseError:
            return False
        own = self.services.is_own_address
        ours = sum(1 for via in vias
                   if own(via.host, via.port, via.transport.upper() == "TLS"))
        return ours > 1

    async def _cancel(self, tx: ServerTransaction) -> None:
        invite = self.services.stack.find_server_transaction(cancel_target_key(tx.request))
        if invite is None:
            tx.reply(481, "Call/Transaction Does Not Exist")
            return
        tx.reply(200)
        if not await self.services.relay.cancel(invite.key) and invite.final is None:
            invite.reply(487, "Request Terminated")

    # ------------------------------------------------------- stateless relay
    async def on_stray_ack(self, ack: Request, flow: Flow) -> None:
        """Forward the ACK of a 2xx along its route (§16.11, stateless)."""
        try:
            svc = self.services
            signed = strip_own_routes(
                ack, svc.is_myself, lambda uri: svc.is_dialog_route(uri, ack))
            routes = ack.routes
        except ParseError as exc:
            # Route is parsed only here, after the transaction layer; an ACK
            # gets no answer, so a bad one is dropped (and said so).
            log.info("ACK from %s dropped: %s", flow, exc.reason)
            return
        if not signed:
            # Not along a dialog we record-routed (we sign our Record-Route):
            # forwarding it would let anyone bounce ACKs off us to anywhere.
            log.debug("ACK from %s dropped: not along our Record-Route", flow)
            return
        hop = routes[0].uri if routes else ack.uri
        if not isinstance(hop, SipUri) or (not routes and self.services.is_myself(hop)):
            return  # an ACK for us: ends a transaction we answered statelessly
        mf = ack.max_forwards
        if mf is not None and mf <= 0:
            return
        ack.max_forwards = 69 if mf is None else mf - 1
        try:
            target = await resolve_uri(hop)
        except ResolveError as exc:
            log.info("ACK not forwarded: %s", exc)
            return
        transports = self.services.stack.transports
        host, port = transports.local_address(target.transport, target.host)
        ack.headers.prepend("Via", str(Via(target.transport.upper(), host, port,
                                           [("branch", new_branch())])))
        try:
            await transports.send(ack.serialise(), target)
        except (ConnectionError, OSError) as exc:
            log.info("ACK not forwarded to %s: %s", target, exc)

    async def on_stray_response(self, response: Response, flow: Flow) -> None:
        """Forward a response no transaction wants (2xx retransmissions, §16.7).

        Only a 2xx to an INVITE whose branch we generated lately: anything
        else naming us in its top Via is a stray (or forged, to have us
        reflect it to whatever the second Via names) and is dropped (§18.1.2).
        """
        try:
            vias = response.vias
            method = response.cseq[1]
        except ParseError:
            return
        if len(vias) < 2 or method != "INVITE" or not 200 <= response.status < 300:
            return
        stack = self.services.stack
        transports = stack.transports
        top = vias[0]
        if not stack.sent_invite_branch(top.branch):
            log.debug("stray %s from %s dropped: not a branch of ours", response.status, flow)
            return
        response.headers.pop_first_value("Via")
        self.services.stamp_response(response)  # the caller's token, as in relay
        nxt = vias[1]
        host = nxt.received or nxt.host
        port = nxt.rport_value or nxt.port or 5060
        try:
            if nxt.transport.lower() == "udp":
                transports.send_on_flow(response.serialise(), Flow("udp", flow.local, (host, port)))
            else:
                proto = "tls" if nxt.transport.lower() == "tls" else "tcp"
                await transports.send(response.serialise(), Target(proto, host, port))
        except (ConnectionError, OSError) as exc:
            log.info("response not forwarded to %s:%s: %s", host, port, exc)

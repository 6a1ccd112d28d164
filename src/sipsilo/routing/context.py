"""The routing API: what a route function can do with one request.

The names follow Kamailio's script functions, so that the seed's
configuration reads the same in Python (`examples/seed_route.py` is that
transcription):

    ctx.mf_process_maxfwd_header(10)   ctx.uri_is_myself()
    await ctx.save("location")         await ctx.m_dump()
    await ctx.lookup("location")       await ctx.m_store("0")
    ctx.t_on_failure(handler)          await ctx.t_relay()
    ctx.t_reply(202, "Accepted")       ctx.sl_send_reply(483, "Too Many Hops")

A route is `async def route(ctx: RouteContext) -> None`; a failure handler is
`async def failure(ctx: RouteContext) -> None`, run with `ctx.failed_reply`
set when a relayed request ended with a final answer >= 300 or a timeout.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sipsilo.auth.policy import consume_credentials
from sipsilo.proxy.relay import Branch
from sipsilo.push.store import target_of_contact
from sipsilo.registrar.binding import Binding, takes_message
from sipsilo.silo.compose import (
    NOT_STORED_TYPES,
    Refusal,
    StoreLimits,
    media_type,
    message_to_store,
    owner_uri,
)
from sipsilo.silo.limits import fit_refusal
from sipsilo.silo.store import StoreError
from sipsilo.sip.errors import ParseError
from sipsilo.sip.headers import strip_identity
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri, canonical_host
from sipsilo.stack.handles import ServerTransaction
from sipsilo.stack.resolve import ResolveError, resolve_uri

if TYPE_CHECKING:
    from sipsilo.routing.services import Services

log = logging.getLogger("sipsilo.route")

FailureHandler = Callable[["RouteContext"], Awaitable[None]]


class RouteContext:
    def __init__(self, services: Services, tx: ServerTransaction) -> None:
        self.services = services
        self.tx = tx
        self.request: Request = tx.request
        self.flow = tx.flow
        self.original_uri = tx.request.uri
        # Kamailio's $ru: set by lookup() to the first contact (the lookup's
        # branches are relayed); assigned by a route, t_relay() relays there.
        self.new_uri: SipUri | str | None = None
        self._lookup_uri: SipUri | str | None = None
        self.relayed = False   # t_relay() handed the request on
        self.dropped = False   # drop(): intentionally no answer
        self.routed_by_us = False  # loose_route() removed a Route entry of ours
        self.branches: list[Binding] = []
        self.failed_reply: Response | None = None
        self._failure: FailureHandler | None = None
        self._dump_contacts: list[Binding] = []
        self._kick_after_store: Binding | None = None  # set by m_pending()
        self._offline_at_lookup = False  # lookup() ran and found no contact
        # "sip:user@domain" once auth_check() succeeded (Kamailio's $au@$ar).
        self.auth_identity: str | None = None

    # ---------------------------------------------------------------- facts
    @property
    def method(self) -> str:
        return self.request.method

    @property
    def replied(self) -> bool:
        return self.tx.final is not None

    def uri_is_myself(self) -> bool:
        return self.services.is_myself(self.request.uri)

    def request_uri_has_no_user(self) -> bool:
        uri = self.request.uri
        return isinstance(uri, SipUri) and not uri.user

    def from_is_myself(self) -> bool:
        """from_uri==myself: the request claims to come from one of our users.

        An identity decision: the domain alone counts, whatever port the From
        names (sip:alice@ourdomain:9 is still alice, and must authenticate).
        """
        return self.services.is_local_domain(self.request.from_.uri)

    def has_totag(self) -> bool:
        """The request is within a dialog (its To has a tag)."""
        return bool(self.request.to.tag)

    @property
    def from_trusted(self) -> bool:
        """The request came from an [auth] trusted network."""
        return self.services.is_trusted(self.flow.remote[0])

    async def auth_check(self) -> bool:
        """Digest-authenticate the sender; False once it has been answered.

        Like Kamailio's ``auth_check("$fd", "subscriber", "1")``: a REGISTER is
        challenged with 401 and must come from the owner of its To; any other
        request with 407 and the owner of its From (challenged again otherwise,
        as a wrong password is). True without
        a challenge when authentication is off or the source is in [auth] trusted.
        On success our credentials are removed before the request goes on.
        """
        auth = await self.services.authenticator()
        if auth is None or self.auth_identity is not None:
            return True
        if self.method in ("ACK", "CANCEL"):
            return True  # cannot be challenged (RFC 3261 §22.1)
        source = self.flow.remote
        if auth.is_trusted(source[0]):
            return True
        verdict = await auth.check(self.request, source, www=self.method == "REGISTER")
        if not verdict.ok:
            self.t_reply(verdict.status, verdict.reason, headers=verdict.headers)
            return False
        self.auth_identity = verdict.identity
        consume_credentials(self.request, auth.realm)
        return True

    def loose_route(self) -> bool:
        """RFC 3261 §16.4: drop our own Route entries; True if the request
        carried a Route set (ours or one continuing elsewhere).

        Relay on a True only for in-dialog requests (``has_totag()``) whose
        Route set started with us (``routed_by_us``: we record-routed the
        dialog); the default route treats anything else as foreign. An
        initial request with a preloaded Route (an outbound-proxy setting)
        continues through the normal route once our entry is gone, and one
        whose Route still leads elsewhere is a request for a foreign
        destination (``ctx.request.routes`` is then not empty).
        """
        had_routes = bool(self.request.routes)
        svc = self.services
        self.routed_by_us = strip_own_routes(
            self.request, svc.is_myself,
            lambda uri: svc.is_dialog_route(uri, self.request),
        ) > 0
        return had_routes

    def drop(self) -> None:
        """Kamailio's drop: no answer, on purpose.

        The server transaction is taken out of the stack's table (it would
        otherwise stay there for ever); retransmissions of the request are
        absorbed, unanswered, for 32 seconds.
        """
        if self.replied or self.relayed:
            return
        self.dropped = True
        self.tx.stack.drop(self.tx.key)

    def log(self, text: str) -> None:
        log.info("%s %s: %s", self.method, self.request.uri, text)

    # -------------------------------------------------------------- replies
    def t_reply(self, status: int, reason: str | None = None, **kw: object) -> bool:
        if self.replied:
            return False
        self.tx.reply(status, reason, **kw)  # type: ignore[arg-type]
        return True

    # sl_send_reply answers statelessly in Kamailio; here every request already
    # has its server transaction, so both answer through it (and retransmitted
    # requests get the same answer again).
    sl_send_reply = t_reply

    def mf_process_maxfwd_header(self, limit: int = 10) -> bool:
        """False when Max-Forwards is 0 (the request must get 483)."""
        value = self.request.max_forwards
        if value is None:
            self.request.max_forwards = limit
            return True
        return value > 0

    # ----------------------------------------------------------- registrar
    async def save(self, table: str = "location") -> bool:
        """Process a REGISTER and answer it (200 with the bindings, or the error)."""
        svc = self.services
        contacts = self.request.contacts
        if contacts != "*":
            for contact in contacts:
                uri = contact.uri
                if isinstance(uri, SipUri) and svc.is_own_address(
                        uri.host, uri.port, uri.scheme == "sips"):
                    # MESSAGEs for such a binding would come straight back here.
                    self.t_reply(403, "Contact points to this server")
                    return False
        # A stream flow names this process as its owner (routing.handover).
        flow = svc.handover.stamp(self.flow)
        result = await svc.registrar.handle(self.request, flow, time.time())
        response = result.response
        if svc.server_header:
            response.headers.add("Server", svc.server_header)
        self.tx.respond(response)
        self._dump_contacts = result.dump_contacts if result.ok else []
        now = time.time()
        for b in result.added:
            log.info("registered %s at %s for %d s (from %s:%s:%s)", b.aor, b.contact,
                     b.remaining(now), b.flow.transport, *b.flow.remote)
        for b in result.removed:
            log.info("unregistered %s at %s", b.aor, b.contact)
        if svc.push is not None and result.ok and (result.added or result.removed):
            await self._push_registered(result.added or result.removed)
        if not result.ok:
            log.info("REGISTER for %s refused: %s %s", self.request.to.uri,
                     response.status, response.reason)
        return result.ok

    async def _push_registered(self, bindings: list[Binding]) -> None:
        """Tell the push service: a new interval, and the RFC 8599 target if any."""
        assert self.services.push is not None
        target = None
        for b in bindings:
            try:
                uri_params = SipUri.parse(b.contact).params
            except ParseError:
                uri_params = ()
            target = target_of_contact(b.aor, uri_params, b.params) or target
        try:
            await self.services.push.registered(bindings[0].aor, target)
        except StoreError as exc:
            log.warning("push target of %s not saved: %s", bindings[0].aor, exc)

    async def lookup(self, table: str = "location") -> bool:
        """Find the R-URI user's contacts; True (and branches set) if online."""
        uri = self.request.uri
        if not isinstance(uri, SipUri) or not uri.user:
            return False
        bindings = await self.services.location.lookup(uri.aor(), time.time())
        self.branches = bindings
        if not bindings:
            self._offline_at_lookup = True
            return False
        self.new_uri = self._lookup_uri = SipUri.parse(bindings[0].contact)
        return True

    # ---------------------------------------------------------------- silo
    async def m_store(self, mode: str = "0", next_hop: str | None = None,
                      send_at: float | None = None) -> bool:
        """Store the MESSAGE for its owner (see the seed's m_store modes).

        Returns True once the row is committed. A request that cannot be
        stored for a reason the sender must hear (no body, bad type, too
        large, mailbox full) is answered here with that 4xx and False is
        returned; a storage failure returns False unanswered, for the route's
        503. *send_at* (POSIX seconds, with ``[msilo] reminder`` set) stores a
        reminder: sent to the user's contact at that time, not dumped before.
        """
        svc = self.services
        req = self.request
        if req.method != "MESSAGE":
            return False
        to_uri = req.to.uri
        if mode == "0":
            candidates = [self.new_uri, req.uri, to_uri]
        elif mode == "1":
            candidates = [self.original_uri, to_uri]
        else:
            candidates = [to_uri]
        owner = owner_uri(candidates, to_uri)
        if owner is None:
            self.t_reply(400, "No address of record to store for")
            return False
        if svc.is_silo_origin(req):
            # Never store what the silo itself generated (notices, deliveries):
            # Kamailio does, and loops notices into the silo.
            self.t_reply(480, "Temporarily Unavailable")
            return False
        limits = StoreLimits(svc.config.msilo.expire_time, svc.config.msilo.max_body)
        now = int(time.time())
        row = message_to_store(req, owner, now, limits, trusted=self.from_trusted)
        if isinstance(row, Refusal):
            self.t_reply(row.status, row.reason)
            return False
        if self.auth_identity is not None:
            # Who sent it is who authenticated, not whatever the From decorates.
            row = dataclasses.replace(row, src_addr=self.auth_identity)
        refusal = fit_refusal(row) or self._rate_refusal()
        if refusal is not None:
            svc.counters.inc("refused_messages")
            self.t_reply(refusal.status, refusal.reason, headers=refusal.headers)
            return False
        try:
            refusal = await svc.quota.refusal(row, now)
            if refusal is not None and (
                    row.msg_key is None or await svc.store.stored_id(row.msg_key) is None):
                # (One stored already is accepted again whatever the caps say.)
                log.info("MESSAGE for %s from %s refused: %s %s", owner.aor(), row.src_addr,
                         refusal.status, refusal.reason)
                svc.counters.inc("refused_messages")
                self.t_reply(refusal.status, refusal.reason)
                return False
            started = time.perf_counter()
            row_id = await svc.store.store(row)
        except StoreError as exc:
            log.warning("MESSAGE for %s not stored: %s", owner.aor(), exc)
            return False
        if row_id.duplicate:
            # Re-sent after our 202 (or to a restarted server): accepted again,
            # stored once, and no second offline notice.
            svc.counters.inc("duplicate_messages")
            log.info("message for %s@%s from %s is stored already (row %s): not stored again",
                     row.username, row.domain, row.src_addr, row_id)
            return True
        svc.quota.stored(row)
        svc.counters.inc("stored_messages")
        svc.counters.observe("store_commit_seconds", time.perf_counter() - started)
        if log.isEnabledFor(logging.INFO):  # one line per message: short, and only built when shown
            log.info("stored message %s for %s@%s from %s (%d bytes)", row_id, row.username,
                     row.domain, row.src_addr, len(row.body),
                     extra={"call_id": req.call_id, "user": f"{row.username}@{row.domain}",
                            "message_id": row_id})
        if send_at is not None and svc.config.msilo.reminder and svc.push_store is not None:
            try:
                await svc.push_store.set_send_time(row_id, max(1, int(send_at)))
            except StoreError as exc:  # stays an ordinary stored message
                log.warning("message %s: reminder time not set: %s", row_id, exc)
            else:
                log.info("message %s is a reminder for %s", row_id, time.ctime(send_at))
                return True
        svc.after_store(req, next_hop, self.auth_identity, self.flow)
        binding = self._kick_after_store
        if svc.push is not None and binding is None:
            svc.push.stored(owner.aor(), row.username, row.domain, row.src_addr)
        if binding is not None:
            # Queued behind stored messages: the dump delivers it in its turn.
            self._kick_after_store = None
            await svc.dump_to(binding, next_hop)
        elif self._offline_at_lookup:
            await self._dump_if_online_now(owner, next_hop)
        return True

    def _rate_refusal(self) -> Refusal | None:
        """503 with Retry-After when this source stores faster than
        [msilo] foreign_store_rate allows a sender nobody authenticated.

        Exempt: an authenticated sender, a trusted network, and, with
        authentication off, a From of our own domains (with it on, the route
        challenges those before they get here).
        """
        svc = self.services
        bucket = svc.store_rate
        if bucket is None or self.auth_identity is not None or self.from_trusted:
            return None
        if svc.auth is None and self.from_is_myself():
            return None
        wait = bucket.wait(self.flow.remote[0])
        if not wait:
            return None
        seconds = max(1, math.ceil(wait))
        return Refusal(503, "Service Unavailable - store rate limit for this source",
                       (("Retry-After", str(seconds)),))
    async def _dump_if_online_now(self, owner: SipUri, next_hop: str | None) -> None:
        """Deliver a row stored for an owner who was offline at lookup() but is not now.

        A REGISTER between that lookup and the commit started a dump that did not see
        the row yet (the store and the dump's scan run on different connections of a
        server database): the row would wait for the next REGISTER, and the owner's
        next live MESSAGE, relayed at once, would overtake it. Found by the soak.
        """
        try:
            binding = await self.services.message_binding(owner.aor())
        except StoreError as exc:
            log.warning("location of %s not read after a store: %s", owner.aor(), exc)
            return
        if binding is not None:
            await self.services.dump_to(binding, next_hop)

    async def m_pending(self) -> bool:
        """Must a MESSAGE to this online user queue behind stored ones?

        True while a dump to the R-URI user is running: relaying the new
        MESSAGE directly would overtake the stored ones still being sent. The
        route then stores it instead (m_store, 202), and that m_store, once
        the row is committed, extends the running delivery, so it arrives in
        stored order. Rows left over from earlier dumps (a message the phone
        refused) do not count: they are retried at the next REGISTER and must
        not turn every later live message into a stored one. Typing
        indications (never stored) are always relayed. Call it after a
        successful lookup(). Where another process may be the one dumping to
        this user (instances on one database, ``[registrar] db_url``; or
        ``[server] workers`` > 1, whose MESSAGE may arrive at a worker other
        than the one holding the user's connection) the database is asked too
        (silo.cluster.pending_elsewhere_sql: a row claimed by another process,
        or stored and not tried yet; one SELECT per live MESSAGE).
        """
        svc = self.services
        uri = self.original_uri
        if self.method != "MESSAGE" or not isinstance(uri, SipUri) or not uri.user:
            return False
        ctype = self.request.content_type
        if ctype is not None and media_type(ctype) in NOT_STORED_TYPES:
            return False
        user, domain = uri.user, canonical_host(uri.host)
        pending = svc.delivery.busy(user, domain)
        if not pending and (svc.config.registrar.db_url or svc.config.server.workers > 1):
            # Another instance or worker may be dumping to this user; only
            # the silo's claims can say (silo.cluster).
            try:
                pending = await svc.store.pending_elsewhere(
                    user, domain, svc.delivery.owner, int(time.time()))
            except StoreError as exc:
                log.warning("cannot check deliveries of %s@%s elsewhere: %s", user, domain, exc)
        if pending:
            self._kick_after_store = next((b for b in self.branches if takes_message(b)), None)
        return pending

    async def m_dump(self, next_hop: str | None = None) -> bool:
        """Deliver the stored messages of the user who just registered."""
        svc = self.services
        req = self.request
        if req.method != "REGISTER" or not self._dump_contacts:
            return False
        binding = next((b for b in self._dump_contacts if takes_message(b)), None)
        if binding is None:
            log.info("%s does not accept MESSAGE: nothing dumped", req.to.uri)
            return False
        return await svc.dump_to(binding, next_hop)

    # ---------------------------------------------------------------- proxy
    def t_on_failure(self, handler: FailureHandler) -> None:
        self._failure = handler

    async def t_relay(self) -> bool:
        """Relay statefully: to ``new_uri`` when the route assigned it, else to
        the looked-up contacts, else to the R-URI (or the remaining Route set).

        When looked-up contacts exist but none of them can be reached, the
        failure handler (if armed) runs with a synthetic 480, as if the
        branches had failed; without one the request is answered 480.
        """
        svc = self.services
        if not self.from_trusted:
            stripped = strip_identity(self.request.headers)
            if stripped:
                log.debug("%s from %s: identity headers %s removed (untrusted source)",
                          self.method, self.flow, ", ".join(stripped))
        branches: list[Branch] = []
        explicit = self.new_uri is not None and self.new_uri is not self._lookup_uri
        if explicit:
            uri = self.new_uri
            if isinstance(uri, str):
                try:
                    uri = SipUri.parse(uri)
                except ParseError:
                    self.t_reply(416, "Unsupported URI Scheme")
                    return False
            assert uri is not None
            self.request.uri = uri
        if self.branches and not explicit:
            for binding in self.branches:
                target = await svc.target_for_binding(binding)
                if target is not None:
                    branches.append(Branch(SipUri.parse(binding.contact), target))
            if not branches:
                return await self._fail_unreachable()
        else:
            uri = self.request.uri
            if not isinstance(uri, SipUri):
                self.t_reply(416, "Unsupported URI Scheme")
                return False
            routes = self.request.routes
            # A remaining Route set decides the next hop (loose routing).
            hop = routes[0].uri if routes and isinstance(routes[0].uri, SipUri) else uri
            try:
                branches.append(Branch(uri, await resolve_uri(hop)))
            except ResolveError as exc:
                self.t_reply(404, f"Not Found - {exc}")
                return False
        failure = None
        if self._failure is not None:
            handler = self._failure

            async def failure(reply: Response) -> None:
                self.failed_reply = reply
                await handler(self)

        self.relayed = True
        await svc.relay.relay(
            self.tx, self.request, branches,
            record_route=svc.record_route(self.flow, self.request), failure=failure,
        )
        return True

    async def _fail_unreachable(self) -> bool:
        """No registered contact is reachable: the failure route decides (480)."""
        handler = self._failure
        if handler is not None:
            self.failed_reply = self.tx.make_response(480, "Temporarily Unavailable")
            await handler(self)
        self.t_reply(480, "Temporarily Unavailable")
        return False


def strip_own_routes(
    request: Request,
    is_myself: Callable[[SipUri], bool],
    signed: Callable[[SipUri], bool] | None = None,
) -> int:
    """Pop the Route entries naming us from the top; how many were popped
    (with `signed`: how many of them carried our Record-Route signature)."""
    popped = 0
    while True:
        routes = request.routes
        if not routes:
            return popped
        uri = routes[0].uri
        if not (isinstance(uri, SipUri) and is_myself(uri)):
            return popped  # a Route set that continues past us
        request.headers.pop_first_value("Route")
        if signed is None or signed(uri):
            popped += 1



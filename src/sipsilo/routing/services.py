"""Everything a route can reach, built once by the app and shared by requests.

Also the small policies several routing functions need: what "myself" is,
how a binding is reached, where the offline notice goes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sipsilo.auth.auto import AutoSwitch
from sipsilo.auth.policy import Authenticator, in_networks
from sipsilo.config import Config
from sipsilo.flow import CLIENT_OPENED, Flow, Target
from sipsilo.metrics import Counters
from sipsilo.proxy.relay import Relay
from sipsilo.proxy.route_token import DOWN, RouteKeys, route_targets, target_of
from sipsilo.push.service import PushService
from sipsilo.push.store import PushStore
from sipsilo.registrar.binding import Binding, takes_message
from sipsilo.registrar.location import LocationService
from sipsilo.registrar.registrar import Registrar
from sipsilo.routing.handover import FlowOwner
from sipsilo.silo.compose import offline_notice
from sipsilo.silo.delivery import DeliveryEngine, DeliveryTarget
from sipsilo.silo.limits import Caps, SourceRate, StoreQuota
from sipsilo.silo.store import SiloStore, StoreError
from sipsilo.sip.errors import ParseError
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri, canonical_host, format_host
from sipsilo.stack.core import SipStack
from sipsilo.stack.resolve import ResolveError, resolve_uri

log = logging.getLogger(__name__)



@dataclass
class Services:
    config: Config
    stack: SipStack
    registrar: Registrar
    location: LocationService
    store: SiloStore
    delivery: DeliveryEngine
    relay: Relay
    counters: Counters
    server_header: str | None
    listen_ports: set[int] = field(default_factory=set)
    domains: set[str] = field(default_factory=set)
    auth: Authenticator | None = None   # None: authentication is off
    # enabled = "auto" with no users at start-up: asked again by authenticator()
    auth_auto: AutoSwitch | None = None
    # Signs our Record-Route entries (proxy.route_token), so that only dialogs
    # we really record-routed are relayed along their Route set, and only there.
    route_keys: RouteKeys = field(
        default_factory=lambda: RouteKeys(secrets.token_bytes(32), 43200))
    # Which process holds a binding's connection, and how to reach it there
    # (routing.handover); with one process nobody else holds one.
    handover: FlowOwner = field(default_factory=lambda: FlowOwner(secrets.token_bytes(32)))
    # [push]: wakes sleeping phones (sipsilo.push); None when no pusher is configured.
    push: PushService | None = None
    # The SQL of push targets and reminders; None when neither is configured.
    push_store: PushStore | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # The storage limits of [msilo] (silo.limits), per process.
    quota: StoreQuota = field(init=False)
    store_rate: SourceRate | None = field(init=False)

    def __post_init__(self) -> None:
        m = self.config.msilo
        self.quota = StoreQuota(self.store, Caps(m.max_messages, m.max_sender_messages,
                                                 m.max_rows))
        self.store_rate = (SourceRate(m.foreign_store_rate, m.foreign_store_burst)
                           if m.foreign_store_rate > 0 else None)

    async def authenticator(self) -> Authenticator | None:
        """The authenticator, None while authentication is off. With ``auto`` and an
        empty table at start-up, this looks again (at most once a second) and turns
        authentication on once ``sipsilo user add`` has added a user."""
        if self.auth is None and self.auth_auto is not None:
            self.auth = await self.auth_auto.poll()
            if self.auth is not None:
                self.auth_auto = None
        return self.auth

    # ------------------------------------------------------------- myself
    def is_myself_host(self, host: str) -> bool:
        return canonical_host(host) in self.domains

    def is_own_address(self, host: str, port: int | None, secure: bool = False) -> bool:
        """host:port is one of our listeners (the port defaulting as in a URI),
        including the advertised address and, behind a wildcard listener, any
        address of this machine."""
        port = port or (5061 if secure else 5060)
        transports = getattr(self.stack, "transports", None)
        if transports is None:
            return False
        return bool(transports.is_local_address(host, port))

    def is_myself(self, uri: SipUri | str | None) -> bool:
        """uri==myself, for routing: a served domain on one of our ports when a
        port is given, or one of our own listen addresses (what our
        Record-Route and Via name) even when [server] domains is set."""
        if not isinstance(uri, SipUri):
            return False
        if self.is_myself_host(uri.host) and (uri.port is None or uri.port in self.listen_ports):
            return True
        return self.is_own_address(uri.host, uri.port, uri.scheme == "sips")

    def is_local_domain(self, uri: SipUri | str | None) -> bool:
        """The URI names one of our served domains, whatever its port: for
        identity decisions (is this From/To one of our users), where a port
        must not turn a local user into a stranger."""
        return isinstance(uri, SipUri) and self.is_myself_host(uri.host)

    def is_trusted(self, source_ip: str) -> bool:
        """The source is in [auth] trusted (whether or not authentication is on)."""
        return in_networks(source_ip, tuple(self.config.auth.trusted))

    def is_silo_origin(self, request: Request) -> bool:
        registrar = self.config.msilo.registrar
        if registrar is None:
            return False
        try:
            ours = SipUri.parse(registrar).aor()
        except ParseError:
            return False
        uris = (request.from_.uri, request.to.uri)
        return any(isinstance(u, SipUri) and u.aor() == ours for u in uris)

    def record_route(self, flow: Flow, request: Request) -> str:
        """Our Record-Route for an INVITE we relay, with the callee's token
        (see proxy.route_token); stamp_response() swaps it for the caller's."""
        # [server] advertise, or the real address behind a wildcard listener.
        host, port = self.stack.transports.advertised(flow)
        transport = "" if flow.transport == "udp" else f";transport={flow.transport}"
        contacts = request.contacts
        caller = contacts[0].uri if contacts != "*" and contacts else None
        token = self.route_keys.for_callee(
            request.call_id, request.from_.tag or "", target_of(caller),
            route_targets(r.uri for r in request.record_routes), time.time())
        return f"<sip:{format_host(host)}:{port}{transport};lr;sr={token}>"

    def stamp_response(self, response: Response) -> None:
        """§16.7 step 4: in a response going upstream, our Record-Route entry
        carries the caller's token (bound to the callee's tag and Contact)
        instead of the callee's, which must never reach the caller."""
        values = response.headers.get_all("Record-Route")
        if not any(f"sr={DOWN}" in v for v in values):
            return
        try:
            entries = response.record_routes
            contacts = response.contacts
            callee = contacts[0].uri if contacts != "*" and contacts else None
            from_tag, to_tag = response.from_.tag or "", response.to.tag or ""
        except ParseError:
            # Nothing to sign for: the entry goes, the caller gets no route set through us.
            response.headers.set_all("Record-Route", [v for v in values if f"sr={DOWN}" not in v])
            return
        out = []
        for i, (value, entry) in enumerate(zip(values, entries, strict=True)):
            uri = entry.uri
            old = uri.param("sr") if isinstance(uri, SipUri) else None
            if old and old.startswith(DOWN) and self.is_myself(uri):
                onward = route_targets(e.uri for e in reversed(entries[:i]))
                token = self.route_keys.for_caller(
                    response.call_id, from_tag, to_tag, target_of(callee), onward, time.time())
                value = value.replace(f"sr={old}", f"sr={token}")
            out.append(value)
        response.headers.set_all("Record-Route", out)

    def is_dialog_route(self, uri: SipUri, request: Request) -> bool:
        """A Route entry naming us (already removed from *request*) whose token
        was issued for this request's dialog, direction, Request-URI and the
        Route entries that remain."""
        token = uri.param("sr")
        if not token:
            return False
        try:
            rest = route_targets(r.uri for r in request.routes)
            from_tag, to_tag = request.from_.tag or "", request.to.tag or ""
        except ParseError:
            return False
        return self.route_keys.check(token, request.call_id, from_tag, to_tag,
                                     target_of(request.uri), rest, time.time())

    # ----------------------------------------------------------- targets
    async def target_for_binding(
        self, binding: Binding, next_hop: str | None = None
    ) -> Target | None:
        """How to reach a registered contact.

        Through next_hop (an outbound proxy) when given. Otherwise: a client
        on a stream transport is reached over the connection it registered
        on (it usually cannot accept a new one); a client that asked for RFC
        5626 outbound (reg-id) is reached at the address its REGISTER came
        from; anyone else at its Contact address -- unless (nathelper-like)
        the REGISTER came over UDP from another IP than the Contact names (a
        phone behind NAT, whose private Contact is unreachable): then at the
        address and port the REGISTER came from. The Request-URI stays the
        Contact either way. A request to a UDP binding leaves from the socket
        the REGISTER came in on, the pinhole the phone's NAT opened.
        """
        hop = next_hop or self.config.msilo.outbound_proxy
        if hop:
            try:
                return await resolve_uri(SipUri.parse(hop))
            except (ResolveError, ParseError) as exc:
                log.warning("outbound proxy %s unusable: %s", hop, exc)
                return None
        flow = binding.flow
        if self.handover.elsewhere(flow):
            # Another worker holds the connection: relayed through it.
            self.counters.inc("handed_over")
            return self.handover.target(flow)
        if flow.transport != "udp" and self.stack.transports.tcp.of_flow(
                flow.conn_id, flow.remote) is not None:
            return Target(flow.transport, *flow.remote, flow.conn_id)
        if flow.transport in CLIENT_OPENED or (flow.transport != "udp" and binding.reg_id):
            # RFC 5626 / RFC 7118: the flow was the only way to this client and
            # it is gone; a MESSAGE is stored until the client registers again.
            log.info("contact %s of %s unreachable: its %s connection is closed",
                     binding.contact, binding.aor, flow.transport)
            return None
        local = flow.local
        back = self.back_along(flow.transport, local, flow.remote, flow.conn_id)
        if back is not None and back.reliable:
            return back
        source = Target("udp", *flow.remote, local=local)
        if binding.reg_id is not None and flow.transport == "udp":
            return source
        try:
            target = await resolve_uri(SipUri.parse(binding.contact))
        except (ResolveError, ParseError) as exc:
            if flow.transport == "udp":
                return source  # an unresolvable Contact: where it registered from
            log.info("contact %s of %s unreachable: %s", binding.contact, binding.aor, exc)
            return None
        if flow.transport != "udp" or target.transport != "udp":
            return target
        if not _same_ip(target.host, flow.remote[0]) and _behind_nat(target.host):
            # A private Contact that the REGISTER did not come from: the phone
            # is behind NAT (nathelper's nat_uac_test 1). A public Contact on
            # another address (third-party registration, multi-homed phone) is
            # taken as meant.
            return source
        # Same host, maybe another port (a UA registering for another socket).
        return Target("udp", target.host, target.port, local=local)

    def back_along(self, transport: str, local: tuple[str, int], remote: tuple[str, int],
                   conn_id: int | None) -> Target | None:
        """Back to where a message came from: over its connection while that is
        open (a client's own port takes no new one), to its source over UDP."""
        if transport != "udp":
            if self.stack.transports.tcp.of_flow(conn_id, remote) is None:
                return None
            return Target(transport, remote[0], remote[1], conn_id)
        return Target("udp", remote[0], remote[1], local=local)

    # -------------------------------------------------------------- silo
    async def message_binding(self, aor: str) -> Binding | None:
        """The registered contact of *aor* a MESSAGE goes to: the first in
        lookup order that takes MESSAGE (registrar.binding.takes_message)."""
        bindings = await self.location.lookup(aor, time.time())
        return next((b for b in bindings if takes_message(b)), None)

    async def resume_dumps(self, accounts: list[tuple[str, str]]) -> int:
        """Start again the dumps a process of ours died in the middle of (the
        accounts it held claims for, released now): their users are still
        registered, and no REGISTER is coming to start them. How many started."""
        started = 0
        for username, domain in accounts:
            try:
                binding = await self.message_binding(f"sip:{username}@{domain}")
                if binding is not None and await self.dump_to(binding):
                    started += 1
            except (StoreError, ParseError) as exc:  # that account waits for its REGISTER
                log.warning("dump for %s@%s not resumed: %s", username, domain, exc)
        return started

    async def dump_to(self, binding: Binding, next_hop: str | None = None) -> bool:
        target = await self.target_for_binding(binding, next_hop)
        if target is None:
            return False
        aor = SipUri.parse(binding.aor)
        self.delivery.kick(
            aor.user or "", aor.host, DeliveryTarget(SipUri.parse(binding.contact), target)
        )
        return True

    def after_store(
        self, request: Request, next_hop: str | None, identity: str | None = None,
        source: Flow | None = None,
    ) -> None:
        """Send the offline notice, if configured, without delaying the 202.

        It goes to a registered contact of the sender or back to the request's
        source (*source*), never to a Contact or From the request merely names:
        one datagram must not make us send to a host of its choice. With
        authentication on, only an authenticated sender (*identity*) gets one.
        """
        msilo = self.config.msilo
        if msilo.registrar is None or not msilo.notify_offline:
            return
        if self.auth is not None and identity is None:
            log.debug("offline notice not sent: sender not authenticated")
            return
        task = asyncio.create_task(
            self._notify(request, msilo.registrar, next_hop, identity, source))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(
        self, request: Request, registrar: str, next_hop: str | None, identity: str | None,
        source: Flow | None,
    ) -> None:
        sender: SipUri | str | None = SipUri.parse(identity) if identity else request.from_.uri
        if not isinstance(sender, SipUri):
            return
        target: Target | None
        if self.is_local_domain(sender) and sender.user:
            # A local sender: reach it where it is registered. If it is offline
            # the notice is dropped, never stored (it is ours, not a message).
            bindings = await self.location.lookup(sender.aor(), time.time())
            if not bindings:
                return
            uri = SipUri.parse(bindings[0].contact)
            target = await self.target_for_binding(bindings[0], next_hop)
        else:
            # Anyone else: addressed as it asked (its Contact, else its From),
            # but sent only back to where the request came from.
            uri = sender
            contacts = request.contacts if self.config.msilo.use_contact else []
            if contacts != "*" and contacts and isinstance(contacts[0].uri, SipUri):
                uri = contacts[0].uri
            if source is None:
                self.counters.inc("notices_failed")
                return
            target = self.back_along(source.transport, source.local, source.remote,
                                     source.conn_id)
        if target is None:
            self.counters.inc("notices_failed")
            log.info("offline notice to %s not sent: no way back to it", uri)
            return
        notice = offline_notice(request, registrar, uri, self.server_header)
        # Nobody acts on the answer: no task waits for it (thousands a second).
        self.stack.start_request(notice, target)
        self.counters.inc("notices_sent")
        log.debug("offline notice to %s sent to %s", uri, target)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _same_ip(a: str, b: str) -> bool:
    return canonical_host(a) == canonical_host(b)


_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)


@lru_cache(maxsize=4096)
def _behind_nat(host: str) -> bool:
    """A Contact address nobody outside its own network can reach."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_private or addr.is_link_local or (addr.version == 4 and addr in _SHARED)

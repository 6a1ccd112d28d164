"""RFC 3261 §10.3 REGISTER processing.

``Registrar.handle`` takes a parsed REGISTER and returns the response to send
plus what changed; the only side effect is on the location service. The
caller (app/routing) does authentication, sends the response, and starts the
msilo dump for ``RegisterResult.dump_contacts``.

Decisions where the RFC leaves room (documented in docs/architecture.md):

* Out-of-order CSeq (same Call-ID, CSeq not higher than the stored binding's):
  the whole request fails with ``500 Out of order CSeq`` and nothing changes
  (§10.3 step 7 "the update MUST be aborted and the request fails"; failures
  there are 500). Kamailio silently ignores such contacts instead. No
  Retry-After: retrying the same CSeq can never succeed, the UA needs a new one.
* Domains not served: ``403 Forbidden - domain not served``. An app that wants
  to relay such REGISTERs checks ``Registrar.serves(request)`` first.
* ``max_contacts`` exceeded: ``403 Too many registered contacts`` (Kamailio
  answers 503; 403 tells the UA that retrying will not help). Only a request
  adding a new binding is refused, refreshes of existing ones always pass.
* All validation happens before the first store write, so a rejected
  REGISTER never leaves partial changes (§10.3 step 7 atomicity).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace

from sipsilo.flow import Flow
from sipsilo.registrar.binding import Binding, aor_of
from sipsilo.registrar.contact import (
    ContactUpdate,
    Reject,
    parse_delta_seconds,
    read_contact,
    render_contact,
    split_methods,
)
from sipsilo.registrar.location import LocationService, lookup_order
from sipsilo.registrar.locks import KeyedLocks
from sipsilo.sip.address import NameAddr, parse_contacts
from sipsilo.sip.dates import format_rfc1123
from sipsilo.sip.errors import ParseError, SipError
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri

DomainPolicy = Callable[[str], bool] | Collection[str] | None


@dataclass(slots=True)
class RegisterResult:
    response: Response
    aor: str | None  # None when the request was refused before the AoR was known
    added: list[Binding] = field(default_factory=list)  # new or refreshed, expiry > 0
    removed: list[Binding] = field(default_factory=list)  # expires=0, wildcard, replaced
    dump_contacts: list[Binding] = field(default_factory=list)  # msilo targets, lookup order

    @property
    def ok(self) -> bool:
        return 200 <= self.response.status < 300


class Registrar:
    """RFC 3261 §10.3 registrar over a ``LocationService``.

    ``domains``: the domains whose AoRs are kept here, as a set of host names
    or a predicate on a (lower-case) host; None serves every domain.
    ``now`` given to ``handle`` is POSIX time: it stamps the Date header and
    the bindings' ``expires_at``.
    """

    def __init__(
        self,
        location: LocationService,
        default_expires: int = 3600,
        min_expires: int = 60,
        max_expires: int = 86400,
        domains: DomainPolicy = None,
        *,
        max_contacts: int = 0,
        supported: Collection[str] = (),
    ) -> None:
        if default_expires <= 0:
            raise ValueError("default_expires must be positive")
        self.location = location
        self.min_expires = min_expires  # 0 disables the 423 check
        self.max_expires = max_expires  # 0 = no cap
        # The default must itself satisfy the bounds, or a REGISTER without
        # any expiry would be refused or exceed the cap.
        self.default_expires = max(default_expires, min_expires)
        if max_expires:
            self.default_expires = min(self.default_expires, max_expires)
        self.max_contacts = max_contacts
        self.supported = frozenset(s.lower() for s in supported)
        if domains is None:
            self._serves: Callable[[str], bool] = lambda host: True
        elif callable(domains):
            self._serves = domains
        else:
            served = frozenset(d.lower() for d in domains)
            self._serves = served.__contains__
        self._tag_salt = secrets.token_hex(8)
        self._locks = KeyedLocks()

    def serves_domain(self, host: str) -> bool:
        return self._serves(host.lower())

    def serves(self, request: Request) -> bool:
        """True when this registrar keeps the bindings the REGISTER targets
        (§10.3 step 1); an app may relay the request when it is False."""
        uri = request.uri
        return isinstance(uri, SipUri) and self.serves_domain(uri.host)

    async def handle(self, request: Request, flow: Flow, now: float) -> RegisterResult:
        if request.method != "REGISTER":
            raise ValueError(f"Registrar.handle got a {request.method}")
        to_tag = self._to_tag(request)
        aor: str | None = None
        try:
            aor = self._target_aor(request)
            async with self._locks.hold(aor):
                return await self._process(request, flow, now, aor, to_tag)
        except Reject as exc:
            response = request.make_response(exc.status, exc.reason, to_tag=to_tag)
            for name, value in exc.headers:
                response.headers.add(name, value)
            return RegisterResult(response=response, aor=aor)
        except SipError as exc:
            # A header parsed lazily (To, Call-ID, CSeq ...) turned out malformed.
            response = request.make_response(exc.status, exc.reason, to_tag=to_tag)
            return RegisterResult(response=response, aor=aor)

    # -- §10.3 steps ---------------------------------------------------------

    def _target_aor(self, request: Request) -> str:
        """Steps 1, 2 and 5: domain, Require, and the AoR from To."""
        if not isinstance(request.uri, SipUri):
            raise Reject(416, "Unsupported URI Scheme")
        if not self.serves_domain(request.uri.host):
            raise Reject(403, "Forbidden - domain not served")
        unsupported = [
            option.strip()
            for value in request.headers.get_all("Require")
            for option in value.split(",")
            if option.strip() and option.strip().lower() not in self.supported
        ]
        if unsupported:
            raise Reject(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri):
            raise Reject(404, "Not Found - To URI is not a SIP URI")
        if not to_uri.user:
            raise Reject(404, "Not Found - To URI has no user part")
        if not self.serves_domain(to_uri.host):
            raise Reject(403, "Forbidden - domain not served")
        return aor_of(to_uri)

    async def _process(
        self, request: Request, flow: Flow, now: float, aor: str, to_tag: str
    ) -> RegisterResult:
        header_expires = self._header_expires(request)
        contacts, wildcards = self._contacts(request)
        call_id = request.call_id
        cseq = request.cseq[0]

        if wildcards:
            # §10.3 step 6: "*" only alone and only with Expires: 0.
            if wildcards > 1 or contacts or header_expires != 0:
                raise Reject(400, "Invalid wildcard Contact")
            return await self._remove_all(request, now, aor, call_id, cseq, to_tag)
        if not contacts:  # a query (§10.3 step 6 is skipped)
            return await self._ok(request, now, aor, to_tag)

        allow_values = request.headers.get_all("Allow")
        allow = split_methods(allow_values) if allow_values else None
        updates: dict[str, ContactUpdate] = {}
        for addr in contacts:
            update, requested = read_contact(addr, header_expires, self.default_expires, allow)
            if 0 < requested < self.min_expires:
                raise Reject(423, "Interval Too Brief", (("Min-Expires", str(self.min_expires)),))
            if self.max_expires and requested > self.max_expires:
                update = _with_expires(update, self.max_expires)
            # The same URI twice in one REGISTER: the last occurrence wins.
            updates.pop(update.contact, None)
            updates[update.contact] = update

        current = await self.location.lookup(aor, now)
        by_contact = {b.contact: b for b in current}
        by_instance = {
            (b.instance_id, b.reg_id): b
            for b in current
            if b.instance_id is not None and b.reg_id is not None
        }
        plan: list[tuple[ContactUpdate, Binding | None, Binding | None]] = []
        for update in updates.values():
            existing = by_contact.get(update.contact)
            # RFC 5626 §6: same instance and reg-id is the same flow even when
            # the Contact URI changed, so the old binding is replaced.
            replaced = None
            if update.instance_id is not None and update.reg_id is not None:
                same_flow = by_instance.get((update.instance_id, update.reg_id))
                if same_flow is not None and same_flow.contact != update.contact:
                    replaced = same_flow
            for old in (existing, replaced):
                if old is not None and old.call_id == call_id and old.cseq >= cseq:
                    raise Reject(500, "Out of order CSeq")
            plan.append((update, existing, replaced))

        if self.max_contacts:
            final = set(by_contact)
            for update, _, replaced in plan:
                if replaced is not None:
                    final.discard(replaced.contact)
                if update.expires > 0:
                    final.add(update.contact)
                else:
                    final.discard(update.contact)
            adds_new = any(u.expires > 0 and u.contact not in by_contact for u, _, _ in plan)
            if adds_new and len(final) > self.max_contacts:
                raise Reject(403, "Too many registered contacts")

        user_agent = request.headers.get("User-Agent")
        added: list[Binding] = []
        removed: list[Binding] = []
        try:
            for update, existing, replaced in plan:
                if replaced is not None:
                    await self.location.remove(aor, replaced.contact)
                    removed.append(replaced)
                if update.expires == 0:
                    if existing is not None:
                        await self.location.remove(aor, existing.contact)
                        removed.append(existing)
                    continue
                binding = Binding(
                    aor=aor,
                    contact=update.contact,
                    params=update.params,
                    expires_at=now + update.expires,
                    q=update.q,
                    call_id=call_id,
                    cseq=cseq,
                    flow=flow,
                    user_agent=user_agent,
                    methods=update.methods,
                    instance_id=update.instance_id,
                    reg_id=update.reg_id,
                    registered_at=now,
                )
                await self.location.save(binding)
                added.append(binding)
        except Exception as exc:  # a store failure must still get an answer
            raise Reject(500, "Server Error - location service failure") from exc

        result = await self._ok(request, now, aor, to_tag)
        result.added = added
        result.removed = removed
        result.dump_contacts = sorted(added, key=lookup_order)
        return result

    async def _remove_all(
        self, request: Request, now: float, aor: str, call_id: str, cseq: int, to_tag: str
    ) -> RegisterResult:
        """``Contact: *`` (§10.3 step 6/7): the CSeq rule applies per binding."""
        current = await self.location.lookup(aor, now)
        for old in current:
            if old.call_id == call_id and old.cseq >= cseq:
                raise Reject(500, "Out of order CSeq")
        try:
            await self.location.remove_all(aor)
        except Exception as exc:
            raise Reject(500, "Server Error - location service failure") from exc
        result = await self._ok(request, now, aor, to_tag)
        result.removed = current
        return result

    async def _ok(self, request: Request, now: float, aor: str, to_tag: str) -> RegisterResult:
        """200 OK listing every current binding (§10.3 step 8)."""
        response = request.make_response(200, "OK", to_tag=to_tag)
        for binding in await self.location.lookup(aor, now):
            contact = render_contact(
                binding.contact, binding.params, binding.remaining(now), binding.q
            )
            response.headers.add("Contact", str(contact))
        response.headers.add("Date", format_rfc1123(now))
        return RegisterResult(response=response, aor=aor)

    # -- header readers ------------------------------------------------------

    @staticmethod
    def _header_expires(request: Request) -> int | None:
        raw = request.headers.get("Expires")
        if raw is None:
            return None
        value = parse_delta_seconds(raw)
        if value is None:
            raise Reject(400, "Bad Expires header")
        return value

    @staticmethod
    def _contacts(request: Request) -> tuple[list[NameAddr], int]:
        """All Contacts, and how many ``*`` were among them.

        Each header value is checked for ``*`` itself so a wildcard mixed with
        real contacts is reported as such rather than as a parse error.
        """
        contacts: list[NameAddr] = []
        wildcards = 0
        for value in request.headers.get_all("Contact"):
            if value.strip() == "*":
                wildcards += 1
                continue
            try:
                parsed = parse_contacts(value)
            except ParseError as exc:
                # The sip layer's reasons name the header ("Bad URI in Contact
                # header"); keep them, they tell the UA what to fix.
                reason = exc.reason if "Contact" in exc.reason else "Bad Contact header"
                raise Reject(400, reason) from None
            if parsed == "*":
                wildcards += 1
            else:
                contacts.extend(parsed)
        return contacts, wildcards

    def _to_tag(self, request: Request) -> str:
        """A To tag derived from the request, so a retransmission that reaches
        the registrar again (e.g. after the transaction ended) gets the same
        tag; the salt keeps tags distinct between server instances."""
        try:
            seed = f"{self._tag_salt}|{request.call_id}|{request.from_.tag}|{request.cseq[0]}"
        except SipError:
            seed = f"{self._tag_salt}|{secrets.token_hex(8)}"
        return hashlib.sha256(seed.encode()).hexdigest()[:16]


def _with_expires(update: ContactUpdate, expires: int) -> ContactUpdate:
    return replace(update, expires=expires)

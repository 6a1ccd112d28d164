"""Who must authenticate, and the verdict on one request.

:class:`Authenticator` is what ``RouteContext.auth_check()`` calls. It decides nothing
about routing; it answers "is this request from the user it claims, and may that
user do this": a verdict of OK (with the authenticated AoR) or the response to send
(401/407 with challenges, 403).

Choices that matter for security:

* The challenge never depends on the user: existing and unknown users, right and
  wrong passwords all get the same 401/407, so the answers do not enumerate users.
  An unknown user's digest is still computed (against a dummy HA1) to keep the
  timing alike.
* Every wrong guess gets that same challenge, a right password for an AoR that is
  not the user's included (a 403 there would confirm the password).
* A (source address, account) pair with ``max_failures`` failed attempts is
  answered 403 without any verification for ``block_time`` seconds (a reply, not
  a drop: an unanswered transaction would be retransmitted for 32 s and hold
  server state). Keyed on the pair, not the address alone, so that a spoofer
  (or one bad client) cannot lock every user behind a shared NAT address out.
  The account is the normalised :class:`~sipsilo.auth.identity.Identity` that the
  subscriber lookup uses too: ``bob``, ``bob@`` and ``bob@example.com`` are one
  budget, and spellings that are another account (``bob ``) never find bob's row.
* The digest ``uri`` must be the Request-URI (RFC 2617 §3.2.2.5): otherwise 400,
  so credentials captured for one request cannot be replayed on another.
* Stale or replayed nonces are not failures: clients retry them silently.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from sipsilo.auth.identity import Identity
from sipsilo.auth.nonce import NonceManager, NonceState
from sipsilo.auth.subscribers import Subscriber
from sipsilo.sip.digest import Challenge, Credentials, expected_response, parse_credentials
from sipsilo.sip.errors import ParseError
from sipsilo.sip.message import Request
from sipsilo.sip.uri import SipUri

log = logging.getLogger("sipsilo.auth")

_DUMMY = Subscriber(0, "", "", "", "0" * 32, "", "0" * 64)


class SubscriberLookup(Protocol):
    def get(self, username: str, domain: str) -> Subscriber | None: ...


@dataclass
class Verdict:
    ok: bool
    identity: str | None = None            # "sip:user@domain" when authenticated
    status: int = 0                        # the answer when not ok
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)


class FailureTracker:
    """Failed attempts per key (source address and username); bounded (oldest
    keys forgotten first)."""

    def __init__(self, max_failures: int, block_time: float, max_sources: int = 50_000) -> None:
        self.max_failures = max_failures
        self.block_time = block_time
        self.max_sources = max_sources
        self._by_source: OrderedDict[str, tuple[int, float]] = OrderedDict()  # count, last
        # Blocks pushed out of _by_source by newer keys (key -> until): a guesser who
        # fails as thousands of made-up accounts must not evict his own block. Filling
        # this one too takes max_failures failures per entry.
        self._evicted: OrderedDict[str, float] = OrderedDict()

    def blocked_until(self, source: str, now: float) -> float | None:
        until = self._evicted.get(source)
        if until is not None:
            if now < until:
                return until
            del self._evicted[source]
        entry = self._by_source.get(source)
        if entry is None or not self.max_failures:
            return None
        count, last = entry
        if now - last >= self.block_time:
            del self._by_source[source]  # quiet for block_time: forgiven
            return None
        return last + self.block_time if count >= self.max_failures else None

    def failure(self, source: str, now: float) -> bool:
        """Record a failure; True when the source is now blocked."""
        if not self.max_failures:
            return False
        self.blocked_until(source, now)  # expire an old entry first
        count, _ = self._by_source.pop(source, (0, now))
        self._by_source[source] = (count + 1, now)
        while len(self._by_source) > self.max_sources:
            old, (old_count, last) = self._by_source.popitem(last=False)
            if old_count >= self.max_failures and now - last < self.block_time:
                self._evicted[old] = last + self.block_time
                while len(self._evicted) > self.max_sources:
                    self._evicted.popitem(last=False)
        return count + 1 >= self.max_failures

    def success(self, source: str) -> None:
        self._by_source.pop(source, None)
        self._evicted.pop(source, None)


def failure_key(source_ip: str, who: Identity) -> str:
    """The failure-budget key: source address and account, the same text in every
    process (a shared store could take it as is)."""
    return f"{source_ip} {who.key}"


@lru_cache(maxsize=4096)
def in_networks(source_ip: str, networks: tuple[str, ...]) -> bool:
    """Whether source_ip lies in one of networks (CIDR strings; invalid ones never match).

    Cached: asked for every request, with few distinct sources and lists.
    """
    if not networks:
        return False
    try:
        addr = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    for net in networks:
        try:
            if addr in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


class Authenticator:
    def __init__(
        self,
        subscribers: SubscriberLookup,
        realm: str,
        nonces: NonceManager,
        *,
        algorithms: tuple[str, ...] = ("MD5",),
        trusted: tuple[str, ...] = (),
        max_failures: int = 5,
        block_time: float = 60,
    ) -> None:
        self.subscribers = subscribers
        self.realm = realm
        self.nonces = nonces
        self.algorithms = algorithms
        for net in trusted:  # a bad entry is an error here, not a silent miss later
            ipaddress.ip_network(net, strict=False)
        self.trusted = trusted
        self.failures = FailureTracker(max_failures, block_time)

    def is_trusted(self, source_ip: str) -> bool:
        return in_networks(source_ip, self.trusted)

    def challenge(self, www: bool, now: float, stale: bool = False) -> Verdict:
        """401 (REGISTER) or 407 with one challenge per algorithm, in the configured order.

        One nonce serves every offered algorithm: the client answers one of them.
        """
        nonce = self.nonces.issue(now)
        name = "WWW-Authenticate" if www else "Proxy-Authenticate"
        headers = [(name, Challenge(self.realm, nonce, algorithm=a, stale=stale).to_header())
                   for a in self.algorithms]
        if www:
            return Verdict(False, status=401, reason="Unauthorized", headers=headers)
        return Verdict(False, status=407, reason="Proxy Authentication Required",
                       headers=headers)

    async def check(self, request: Request, source: tuple[str, int], *, www: bool,
                    now: float | None = None) -> Verdict:
        """Authenticate *request* as the owner of its To (``www``: REGISTER) or From."""
        now = time.time() if now is None else now
        ip = source[0]
        where = f"{ip}:{source[1]}"
        claimed = request.to.uri if www else request.from_.uri
        if not isinstance(claimed, SipUri) or not claimed.user:
            return Verdict(False, status=403, reason="Forbidden - no user to authenticate")
        creds = self._credentials(request, www)
        if creds is None:
            return self.challenge(www, now)
        owner = Identity.from_uri(claimed)
        who = Identity.from_digest(creds.username, owner.domain)
        block_key = failure_key(ip, who)
        until = self.failures.blocked_until(block_key, now)
        if until is not None:
            # debug only: a blocked brute-forcer must not flood the log (the block
            # itself was logged as a warning when it began)
            log.debug("auth: %s %s as %s refused unverified: blocked for %ds more",
                      request.method, where, creds.username, int(until - now) + 1)
            return Verdict(False, status=403, reason="Forbidden - too many failed attempts")
        state = self.nonces.check(creds.nonce, now)
        if state is NonceState.INVALID:
            # Ours or not, a nonce we cannot vouch for gets a fresh challenge.
            return self.challenge(www, now)
        if not _same_uri(creds.uri, request.uri):
            log.info("auth: %s from %s: digest uri %r is not the Request-URI %s",
                     request.method, where, creds.uri, request.uri)
            return Verdict(False, status=400, reason="Bad Authorization header - uri mismatch")
        # "bob", "bob@" or "bob@example.com": one account (identity.py), one lookup.
        subscriber = await asyncio.to_thread(self.subscribers.get, who.user, who.domain)
        stored = (subscriber or _DUMMY).hash_for(creds.algorithm, self.realm)
        try:
            expected = expected_response(creds, stored or _DUMMY.ha1, request.method)
        except ValueError:
            log.info("auth: %s from %s: unsupported algorithm/qop %s/%s", request.method,
                     where, creds.algorithm, creds.qop)
            return self.challenge(www, now)
        right = hmac.compare_digest(expected.encode(), creds.response.lower().encode())
        why = ("unknown user" if subscriber is None else
               f"no {creds.algorithm} hash stored" if stored is None else
               "wrong password" if not right else
               # the password is bob's, the AoR is not: answered as a wrong password,
               # counted as one (a 403 would tell the guesser he found bob's password)
               f"authenticated as {who.key} but claims {owner.key}" if who != owner else "")
        if why:
            blocked = self.failures.failure(block_key, now)
            log.warning("auth failure from %s: %s as %s (%s)%s", where, request.method,
                        who, why, "; source blocked for this user" if blocked else "")
            return self.challenge(www, now)
        if state is NonceState.STALE:
            # Right password, old nonce: RFC 7616 §3.3 stale=true, the client retries.
            return self.challenge(www, now, stale=True)
        if not self.nonces.use(creds.nonce, creds.nc_value if creds.qop else None, who.key):
            log.warning("auth: replayed nonce from %s (%s, nc=%s)", where, who, creds.nc)
            return self.challenge(www, now, stale=True)
        self.failures.success(block_key)
        return Verdict(True, identity=who.key)

    def _credentials(self, request: Request, www: bool) -> Credentials | None:
        """The client's credentials for our realm, None when it sent none usable."""
        name = "Authorization" if www else "Proxy-Authorization"
        for value in request.headers.get_all(name):
            try:
                creds = parse_credentials(value)
            except ParseError:
                continue
            if creds.realm == self.realm:
                return creds
        return None


def _same_uri(digest_uri: str, request_uri: SipUri | str) -> bool:
    """The digest uri names the Request-URI (the same text, or the same SIP URI)."""
    if digest_uri == str(request_uri):
        return True
    if not isinstance(request_uri, SipUri):
        return False
    try:
        return SipUri.parse(digest_uri) == request_uri
    except ParseError:
        return False


def consume_credentials(request: Request, realm: str) -> None:
    """Remove our Proxy-Authorization before relaying (Kamailio's consume_credentials)."""
    keep = []
    for value in request.headers.get_all("Proxy-Authorization"):
        try:
            ours = parse_credentials(value).realm == realm
        except ParseError:
            ours = False
        if not ours:
            keep.append(value)
    request.headers.remove("Proxy-Authorization")
    for value in keep:
        request.headers.add("Proxy-Authorization", value)

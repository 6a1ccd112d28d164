"""Binding records kept by the location service, and AoR key normalisation.

The flow a binding was learnt on is a :class:`sipsilo.flow.Flow`, the value the
transports and the stack use too: it lives below all of them, so the registrar
holds it without importing the stack or a transport.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from sipsilo.flow import Flow
from sipsilo.sip.errors import ParseError
from sipsilo.sip.uri import SipUri

Params = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One Contact bound to an address-of-record (RFC 3261 §10.3).

    ``contact`` is the canonical string of the Contact URI; it is the identity
    of the binding within its AoR. ``params`` are the Contact header params as
    received (including ``expires``/``q``; the registrar re-renders those).
    ``registered_at`` is the time of the last REGISTER that saved or refreshed
    this binding, used to order equal-q bindings most recent first.
    All times are POSIX seconds (the registrar's ``now``). Keyword-only so the
    optional fields can sit anywhere without positional surprises.
    """

    aor: str
    contact: str
    params: Params
    expires_at: float
    call_id: str
    cseq: int
    flow: Flow
    q: float = 1.0
    user_agent: str | None = None
    methods: frozenset[str] | None = None
    instance_id: str | None = None
    reg_id: int | None = None
    registered_at: float = 0.0

    def remaining(self, now: float) -> int:
        """Whole seconds left, rounded up so a live binding never shows 0."""
        # round() first: now + 3600 - now may come out as 3600.0000000001.
        left = round(self.expires_at - now, 6)
        return max(0, math.ceil(left))

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


def takes_message(binding: Binding) -> bool:
    """Kamailio's check_message_support(): the contact's methods param, else
    the REGISTER's Allow header, must list MESSAGE when present at all."""
    return binding.methods is None or "MESSAGE" in binding.methods


def aor_of(uri: SipUri) -> str:
    """The location key for a SIP URI: ``sip:user@host``.

    Host lower-case, user case kept, no port or params, and ``sips`` folded
    into ``sip`` so a UA registering with either scheme is found by both.
    ``SipUri.aor`` already does exactly that; going through it keeps the
    registrar's keys identical to what the proxy and silo compute.
    """
    return uri.aor()


@lru_cache(maxsize=4096)
def normalise_aor(aor: str) -> str:
    """Normalise an AoR given as text; unparsable text is used verbatim."""
    try:
        return aor_of(SipUri.parse(aor))
    except ParseError:
        return aor

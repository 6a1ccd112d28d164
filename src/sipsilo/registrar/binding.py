"""Binding records kept by the location service, and AoR key normalisation.

The registrar must not import ``sipsilo.stack`` (layering, see
docs/architecture.md), so the flow a binding was learnt on is described by the
small ``FlowRef`` value type; ``FlowRef.of`` converts the stack's ``Flow`` by
duck typing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from sipsilo.sip.errors import ParseError
from sipsilo.sip.uri import SipUri

Params = tuple[tuple[str, str | None], ...]


class _FlowLike(Protocol):
    """What ``sipsilo.stack.Flow`` looks like; only used by ``FlowRef.of``."""

    @property
    def transport(self) -> str: ...
    @property
    def local(self) -> tuple[str, int]: ...
    @property
    def remote(self) -> tuple[str, int]: ...
    @property
    def conn_id(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class FlowRef:
    """The transport flow a REGISTER arrived on (where to reach the UA back)."""

    transport: str
    local_host: str
    local_port: int
    remote_host: str
    remote_port: int
    conn_id: int | None = None

    @classmethod
    def of(cls, flow: _FlowLike) -> FlowRef:
        """Build from anything shaped like ``sipsilo.stack.Flow``."""
        return cls(
            transport=flow.transport,
            local_host=flow.local[0],
            local_port=flow.local[1],
            remote_host=flow.remote[0],
            remote_port=flow.remote[1],
            conn_id=flow.conn_id,
        )


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
    flow: FlowRef
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

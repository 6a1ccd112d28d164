"""Reading one REGISTER Contact: expiry, q-value, methods, instance/reg-id.

Split from registrar.py so the §10.3 control flow there reads top to bottom
while the field-level validation (and its exact 400 reasons) lives here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipsilo.registrar.binding import Params
from sipsilo.sip.address import NameAddr


class Reject(Exception):
    """Abort REGISTER processing with this status; nothing has been committed."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers


# RFC 3261 §25.1: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)")
_DELTA = re.compile(r"\d{1,10}")
# Anything beyond 2**32-1 is capped to max_expires anyway; the length limit
# only stops absurd digit strings from becoming huge ints.


def parse_delta_seconds(text: str) -> int | None:
    """delta-seconds (RFC 3261 §25.1) or None when malformed."""
    text = text.strip()
    return int(text) if _DELTA.fullmatch(text) else None


def parse_qvalue(text: str) -> float | None:
    text = text.strip()
    return float(text) if _QVALUE.fullmatch(text) else None


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def split_methods(values: list[str]) -> frozenset[str]:
    """Method tokens from Allow header values or a ``methods`` param."""
    return frozenset(
        token.strip().upper()
        for value in values
        for token in unquote(value).split(",")
        if token.strip()
    )


@dataclass(frozen=True, slots=True)
class ContactUpdate:
    """One validated Contact of a REGISTER, before it touches the store."""

    contact: str
    params: Params
    expires: int  # 0 = remove; already capped to max_expires
    q: float
    methods: frozenset[str] | None
    instance_id: str | None
    reg_id: int | None


def read_contact(
    addr: NameAddr,
    header_expires: int | None,
    default_expires: int,
    allow: frozenset[str] | None,
) -> tuple[ContactUpdate, int]:
    """Validate one Contact; returns the update and its requested expiry.

    The requested (uncapped) expiry is returned separately so the caller can
    apply min/max policy with one place deciding 423.
    """
    raw_expires = addr.param("expires")  # "" for a bare ";expires" flag
    if raw_expires is not None:
        expires = parse_delta_seconds(raw_expires)
        if expires is None:
            raise Reject(400, "Bad Contact header - invalid expires parameter")
    elif header_expires is not None:
        expires = header_expires
    else:
        expires = default_expires

    q = 1.0
    raw_q = addr.param("q")
    if raw_q is not None:
        parsed_q = parse_qvalue(raw_q)
        if parsed_q is None:
            raise Reject(400, "Bad Contact header - invalid q-value")
        q = parsed_q

    raw_methods = addr.param("methods")
    methods = split_methods([raw_methods]) if raw_methods else allow

    raw_instance = addr.param("+sip.instance")
    instance_id = unquote(raw_instance) if raw_instance else None

    reg_id: int | None = None
    raw_reg_id = addr.param("reg-id")
    if raw_reg_id is not None:
        reg_id = parse_delta_seconds(raw_reg_id)
        if reg_id is None or reg_id == 0:
            raise Reject(400, "Bad Contact header - invalid reg-id")

    update = ContactUpdate(
        contact=str(addr.uri),
        params=tuple(addr.params),
        expires=expires,
        q=q,
        methods=methods,
        instance_id=instance_id,
        reg_id=reg_id,
    )
    return update, expires


def format_q(q: float) -> str:
    """Shortest qvalue spelling: 0.5 → "0.5", 0.125 → "0.125", 0 → "0"."""
    return f"{q:.3f}".rstrip("0").rstrip(".") or "0"


def render_contact(contact: str, params: Params, remaining: int, q: float) -> NameAddr:
    """The Contact a 200 OK lists: the stored params with a fresh expires/q."""
    fresh: list[tuple[str, str | None]] = [("expires", str(remaining))]
    if q != 1.0:
        fresh.append(("q", format_q(q)))
    fresh.extend((n, v) for n, v in params if n.lower() not in ("expires", "q"))
    return NameAddr(uri=contact, display_name=None, params=fresh)

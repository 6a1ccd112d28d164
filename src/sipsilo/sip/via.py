"""The Via header (RFC 3261 §20.42, RFC 3581 rport)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sipsilo.sip.errors import ParseError
from sipsilo.sip.grammar import (
    HAS_WS,
    WS,
    format_params,
    get_param,
    is_token,
    parse_params,
    remove_param,
    set_param,
)
from sipsilo.sip.uri import format_host, split_hostport


@dataclass
class Via:
    """One via-parm. ``protocol`` is almost always ``SIP/2.0``."""

    transport: str
    host: str
    port: int | None = None
    params: list[tuple[str, str | None]] = field(default_factory=list)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        s = text.strip(WS)
        parts = s.split("/", 2)
        if len(parts) != 3:
            raise ParseError(400, "Bad Via header")
        name, version = parts[0].strip(WS), parts[1].strip(WS)
        rest = parts[2].lstrip(WS)
        # The transport token ends at the LWS before sent-by.
        i = 0
        while i < len(rest) and rest[i] not in WS:
            i += 1
        transport, rest = rest[:i], rest[i:].lstrip(WS)
        if not (is_token(name) and is_token(version) and is_token(transport)):
            raise ParseError(400, "Bad Via header")
        # Other versions still parse: the start line decides on 505, and a
        # response needs this Via to get back to the sender.
        semi = rest.find(";")
        sent_by, params_text = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
        sent_by = sent_by.strip(WS)
        # LWS is allowed around the ':' of sent-by.
        if ":" in sent_by and not sent_by.startswith("["):
            h, _, p = sent_by.partition(":")
            sent_by = f"{h.strip(WS)}:{p.strip(WS)}"
        elif sent_by.startswith("[") and "]" in sent_by:
            end = sent_by.index("]")
            tail = sent_by[end + 1 :].strip(WS)
            if tail.startswith(":"):
                tail = ":" + tail[1:].strip(WS)
            sent_by = sent_by[: end + 1] + tail
        if not sent_by or HAS_WS(sent_by):
            raise ParseError(400, "Bad Via header")
        try:
            host, port = split_hostport(sent_by, "Via header")
        except ParseError:
            raise ParseError(400, "Bad Via header") from None
        try:
            params = parse_params(params_text, "Via header")
        except ParseError:
            raise ParseError(400, "Bad Via header") from None
        return cls(transport.upper(), host, port, params, f"{name.upper()}/{version}")

    def param(self, name: str) -> str | None:
        """Parameter value: ``""`` for a flag (``;rport``), None when absent."""
        return get_param(self.params, name)

    def has_param(self, name: str) -> bool:
        return get_param(self.params, name) is not None

    def set_param(self, name: str, value: str | None) -> None:
        """Set a parameter (None value = flag), keeping its position if present."""
        set_param(self.params, name, value)

    def remove_param(self, name: str) -> None:
        remove_param(self.params, name)

    @property
    def branch(self) -> str | None:
        return self.param("branch") or None

    @property
    def received(self) -> str | None:
        return self.param("received") or None

    @property
    def rport(self) -> str | None:
        """``""`` when the client asked for rport (flag), the value once filled
        in, None when absent -- mirroring ``param`` so RFC 3581 handling can
        tell "asked" from "not asked"."""
        return self.param("rport")

    @property
    def rport_value(self) -> int | None:
        """The rport as a usable port number; None when absent, a flag or garbage
        (an out-of-range value would make the socket call raise)."""
        v = self.param("rport")
        if not (v and v.isascii() and v.isdigit() and len(v) <= 5):
            return None
        port = int(v)
        return port if 0 < port < 65536 else None

    def sent_by(self) -> str:
        """``host[:port]`` as sent (IPv6 bracketed)."""
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by()}{format_params(self.params)}"

    def copy(self) -> Via:
        return Via(self.transport, self.host, self.port, list(self.params), self.protocol)

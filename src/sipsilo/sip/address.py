"""name-addr / addr-spec values (From, To, Contact, Route, Record-Route...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sipsilo.sip.errors import ParseError
from sipsilo.sip.grammar import (
    HAS_WS,
    WS,
    format_params,
    get_param,
    is_token,
    parse_params,
    quote,
    remove_param,
    set_param,
    split_list,
    unquote,
)
from sipsilo.sip.uri import SipUri, parse_uri


def _find_closing_quote(text: str, start: int) -> int:
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        i += 1
    return -1


@dataclass
class NameAddr:
    """A URI with an optional display name and header parameters."""

    uri: SipUri | str
    display_name: str | None = None
    params: list[tuple[str, str | None]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, header: str = "address") -> NameAddr:
        """Parse a name-addr (``"Bob" <sip:bob@b>;tag=x``) or addr-spec."""
        s = text.strip(WS)
        if not s:
            raise ParseError(400, f"Empty {header} header")
        display: str | None = None
        if s[0] == '"':
            end = _find_closing_quote(s, 0)
            if end < 0:
                raise ParseError(400, f"Unterminated quoted string in {header} header")
            display = unquote(s[: end + 1], header)
            s = s[end + 1 :].lstrip(WS)
            if not s.startswith("<"):
                raise ParseError(400, f"Bad {header} header")
        lt = s.find("<")
        if lt >= 0:
            if display is None and lt > 0:
                words = s[:lt].split()
                if not all(is_token(w) for w in words):
                    raise ParseError(400, f"Bad display name in {header} header")
                display = " ".join(words)
            gt = s.find(">", lt)
            if gt < 0:
                raise ParseError(400, f"Unterminated <> in {header} header")
            uri_text = s[lt + 1 : gt]
            rest = s[gt + 1 :]
            if rest.strip(WS) and not rest.lstrip(WS).startswith(";"):
                raise ParseError(400, f"Bad {header} header")
        else:
            # addr-spec: a ';' always starts header params here (RFC 3261 §20.10),
            # which is why URIs with params must be sent in <...>.
            semi = s.find(";")
            uri_text, rest = (s, "") if semi < 0 else (s[:semi], s[semi:])
            uri_text = uri_text.rstrip(WS)
            if "?" in uri_text:
                # RFC 3261 §20.10: a URI with headers must be in <...>.
                raise ParseError(400, f"URI with headers not in <> in {header} header")
        if not uri_text or HAS_WS(uri_text):
            raise ParseError(400, f"Bad URI in {header} header")
        try:
            uri = parse_uri(uri_text)
        except ParseError as exc:
            raise ParseError(400, f"Bad URI in {header} header") from exc
        params = parse_params(rest, f"{header} header")
        return cls(uri, display, params)

    def param(self, name: str) -> str | None:
        """Header parameter value: ``""`` for a flag, None when absent."""
        return get_param(self.params, name)

    def set_param(self, name: str, value: str | None) -> None:
        """Set (``None`` value = flag parameter), keeping its position if present."""
        set_param(self.params, name, value)

    def remove_param(self, name: str) -> None:
        remove_param(self.params, name)

    @property
    def tag(self) -> str | None:
        return self.param("tag") or None

    @property
    def expires(self) -> int | None:
        """The ``expires`` parameter (Contact), None when absent or malformed."""
        v = self.param("expires")
        return int(v) if v and v.isdigit() else None

    @property
    def q(self) -> float | None:
        """The ``q`` parameter (Contact), None when absent or malformed."""
        v = self.param("q")
        try:
            return float(v) if v else None
        except ValueError:
            return None

    def __str__(self) -> str:
        name = f"{quote(self.display_name)} " if self.display_name else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"

    def copy(self) -> NameAddr:
        return NameAddr(self.uri, self.display_name, list(self.params))


def parse_contacts(value: str) -> list[NameAddr] | Literal["*"]:
    """Parse a Contact header value: ``*`` or a comma list of addresses."""
    if value.strip(WS) == "*":
        return "*"
    return [NameAddr.parse(v, "Contact") for v in split_list(value, "Contact")]

"""SIP and SIPS URIs (RFC 3261 §19.1, §25.1)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache

from sipsilo.sip.errors import ParseError

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_UNRESERVED = _ALNUM + "-_.!~*'()"
# Characters each URI component may carry literally; anything else is %-escaped.
USER_SAFE = frozenset(_UNRESERVED + "&=+$,;?/")
PASSWORD_SAFE = frozenset(_UNRESERVED + "&=+$,")
PARAM_SAFE = frozenset(_UNRESERVED + "[]/:&+$")
HEADER_SAFE = frozenset(_UNRESERVED + "[]/?:+$")
_HOST_CHARS = frozenset(_ALNUM + "-.")
_HEX = frozenset("0123456789abcdefABCDEF")
_SCHEME_CHARS = frozenset(_ALNUM + "+-.")


def _class_re(chars: frozenset[str]) -> re.Pattern[str]:
    # One character class, fullmatch: linear, and run in C.
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + "]*")


_SAFE_RE = {
    USER_SAFE: _class_re(USER_SAFE | {"%"}),
    PASSWORD_SAFE: _class_re(PASSWORD_SAFE | {"%"}),
    PARAM_SAFE: _class_re(PARAM_SAFE | {"%"}),
    HEADER_SAFE: _class_re(HEADER_SAFE | {"%"}),
}
_UNESCAPED_RE = {safe: _class_re(safe) for safe in _SAFE_RE}
_HOST_RE = re.compile(r"[A-Za-z0-9.\-]+")
_BAD_URI_CHAR = re.compile(r"[\x00-\x20\x7f\"<>\\^`{|}]").search


def unescape(text: str, what: str = "URI") -> str:
    """Decode %XX escapes (as UTF-8 octets, falling back to Latin-1)."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not all(h in _HEX for h in pair):
                raise ParseError(400, f"Bad escape in {what}")
            out.append(int(pair, 16))
            i += 3
        else:
            out.extend(c.encode("utf-8", "surrogateescape"))
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return out.decode("latin-1")


def escape(text: str, safe: frozenset[str]) -> str:
    """%-escape every character of ``text`` not in ``safe``."""
    fast = _UNESCAPED_RE.get(safe)
    if fast is not None and fast.fullmatch(text) is not None:
        return text
    out: list[str] = []
    for c in text:
        if c in safe:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
    return "".join(out)


def _check_chars(text: str, safe: frozenset[str], what: str) -> None:
    fast = _SAFE_RE.get(safe)
    if fast is not None and fast.fullmatch(text) is not None:
        return
    for c in text:
        if c not in safe and c != "%":
            raise ParseError(400, f"Bad character in {what}")


def parse_host(text: str, what: str = "URI") -> str:
    """Validate a host (hostname, IPv4 or bracketed IPv6) and normalise it."""
    if not text:
        raise ParseError(400, f"Missing host in {what}")
    if text[0] == "[":
        if text[-1] != "]":
            raise ParseError(400, f"Bad IPv6 reference in {what}")
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise ParseError(400, f"Bad IPv6 reference in {what}") from None
        return text[1:-1].lower()
    if _HOST_RE.fullmatch(text) is None:
        raise ParseError(400, f"Bad host in {what}")
    if text[0] in "-." or ".." in text:
        raise ParseError(400, f"Bad host in {what}")
    return text.lower()


def parse_port(text: str, what: str = "URI") -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        raise ParseError(400, f"Bad port in {what}")
    port = int(text)
    if port > 65535:
        raise ParseError(400, f"Bad port in {what}")
    return port


def split_hostport(text: str, what: str = "URI") -> tuple[str, int | None]:
    """``host[:port]`` -> (normalised host, port or None)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(400, f"Bad IPv6 reference in {what}")
        host = parse_host(text[: end + 1], what)
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise ParseError(400, f"Bad host in {what}")
        return host, parse_port(rest[1:], what)
    host_text, colon, port_text = text.partition(":")
    host = parse_host(host_text, what)
    return host, parse_port(port_text, what) if colon else None


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class SipUri:
    """A parsed sip:/sips: URI. Components are stored unescaped."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> SipUri:
        # SipUri is immutable, so one parse of a given text can be shared: the
        # same From, Contact and domain URIs arrive again and again.
        if cls is SipUri:
            return _parse_cached(text)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise ParseError(416 if colon else 400, "Unsupported URI scheme"
                             if colon else "Bad URI")
        if not rest:
            raise ParseError(400, "Bad URI")
        if _BAD_URI_CHAR(rest):
            raise ParseError(400, "Bad character in URI")
        user = password = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            u, pcolon, p = userinfo.partition(":")
            if not u:
                raise ParseError(400, "Bad user in URI")
            _check_chars(u, USER_SAFE, "URI user")
            user = unescape(u, "URI user")
            if pcolon:
                _check_chars(p, PASSWORD_SAFE, "URI password")
                password = unescape(p, "URI password")
        headers_text = ""
        q = rest.find("?")
        if q >= 0:
            rest, headers_text = rest[:q], rest[q + 1 :]
        hostport, _, params_text = rest.partition(";")
        host, port = split_hostport(hostport)
        params: list[tuple[str, str | None]] = []
        if params_text:
            for item in params_text.split(";"):
                name, eq, value = item.partition("=")
                if not name:
                    raise ParseError(400, "Bad URI parameter")
                _check_chars(name, PARAM_SAFE, "URI parameter")
                pname = unescape(name, "URI parameter").lower()
                if eq:
                    if not value:
                        raise ParseError(400, "Bad URI parameter")
                    _check_chars(value, PARAM_SAFE, "URI parameter")
                    params.append((pname, unescape(value, "URI parameter")))
                else:
                    params.append((pname, None))
        headers: list[tuple[str, str]] = []
        if headers_text:
            for item in headers_text.split("&"):
                name, eq, value = item.partition("=")
                if not name or not eq:
                    raise ParseError(400, "Bad URI header")
                _check_chars(name, HEADER_SAFE, "URI header")
                _check_chars(value, HEADER_SAFE, "URI header")
                headers.append((unescape(name, "URI header"), unescape(value, "URI header")))
        return cls(scheme, user, password, host, port, tuple(params), tuple(headers))

    @cached_property
    def _text(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(escape(self.user, USER_SAFE))
            if self.password is not None:
                parts += [":", escape(self.password, PASSWORD_SAFE)]
            parts.append("@")
        parts.append(self.hostport())
        for name, value in self.params:
            parts += [";", escape(name, PARAM_SAFE)]
            if value is not None:
                parts += ["=", escape(value, PARAM_SAFE)]
        if self.headers:
            parts.append("?")
            parts.append("&".join(
                f"{escape(k, HEADER_SAFE)}={escape(v, HEADER_SAFE)}" for k, v in self.headers
            ))
        return "".join(parts)

    def __str__(self) -> str:
        return self._text

    def param(self, name: str) -> str | None:
        """Value of a URI parameter: ``""`` for a flag like ``;lr``, None if absent."""
        name = name.lower()
        for k, v in self.params:
            if k == name:
                return "" if v is None else v
        return None

    def has_param(self, name: str) -> bool:
        return self.param(name) is not None

    def with_params(
        self, changes: Mapping[str, str | bool | None] | None = None, /,
        **kw: str | bool | None,
    ) -> SipUri:
        """Copy with parameters changed: a str sets a value, True sets a flag
        (``lr=True`` -> ``;lr``), None or False removes the parameter. Names
        that are not identifiers go in the positional mapping."""
        params = list(self.params)
        for raw_name, value in {**(changes or {}), **kw}.items():
            name = raw_name.lower()
            idx = next((i for i, (k, _) in enumerate(params) if k == name), None)
            if value is None or value is False:
                if idx is not None:
                    del params[idx]
                continue
            new = (name, None if value is True else str(value))
            if idx is None:
                params.append(new)
            else:
                params[idx] = new
        return dataclasses.replace(self, params=tuple(params))

    def without_params(self, *names: str) -> SipUri:
        drop = {n.lower() for n in names}
        return dataclasses.replace(self, params=tuple(p for p in self.params if p[0] not in drop))

    def replace(self, **changes: object) -> SipUri:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def transport(self) -> str:
        """Transport to use: ``;transport=`` if given, else tls for sips, udp for sip."""
        t = self.param("transport")
        if t:
            return t.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def host_is_ip(self) -> bool:
        return is_ip_address(self.host)

    @property
    def maddr(self) -> str | None:
        return self.param("maddr") or None

    def aor(self) -> str:
        return self._aor

    @cached_property
    def _aor(self) -> str:
        """``sip:user@host`` without port or parameters: the location-service key.

        sips is folded into sip so a user registered over TLS and reached over
        plain SIP maps to the same binding set; the user keeps its escaping
        normalised so ``%61lice`` and ``alice`` are one AoR, and the host is in
        its canonical spelling (canonical_host: ``127.1`` is ``127.0.0.1``).
        """
        host = format_host(canonical_host(self.host))
        if self.user is None:
            return f"sip:{host}"
        return f"sip:{escape(self.user, USER_SAFE)}@{host}"

    def hostport(self) -> str:
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"


def parse_uri(text: str) -> SipUri | str:
    """Parse any absolute URI: sip/sips become SipUri, others are kept as text."""
    scheme, colon, _ = text.partition(":")
    if not colon or not scheme or not scheme[0].isalpha() or not all(
        c in _SCHEME_CHARS for c in scheme
    ):
        raise ParseError(400, "Bad URI")
    if scheme.lower() in ("sip", "sips"):
        return SipUri.parse(text)
    for c in text:
        if c <= " " or c == "\x7f" or c in '"<>':
            raise ParseError(400, "Bad character in URI")
    return text


@lru_cache(maxsize=16384)
def _parse_cached(text: str) -> SipUri:
    return SipUri._parse(text)


@lru_cache(maxsize=4096)
def canonical_host(host: str) -> str:
    """A host in one spelling for comparisons ("is this one of our domains").

    Names are lower-cased and lose a trailing dot (``Example.COM.`` is
    ``example.com``: DNS treats them alike). IP addresses get their one
    canonical text: ``::0001`` is ``::1``, an IPv4-mapped IPv6 address is the
    IPv4 address it maps (``::ffff:127.0.0.1`` is ``127.0.0.1``), and the
    numeric shorthands every resolver accepts as IPv4 (``127.1``,
    ``2130706433``, ``0x7f.0.0.1``; inet_aton(3)) are the dotted quad they
    reach. Who compares spellings differently from how they resolve lets
    ``alice@127.1`` pass for a stranger.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    name = name.lower()
    if name.endswith(".") and len(name) > 1:
        name = name[:-1]
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        numeric = _inet_aton(name)
        return name if numeric is None else str(ipaddress.IPv4Address(numeric))
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


_LOWER_HEX = frozenset("0123456789abcdef")


def _inet_aton(text: str) -> int | None:
    """The IPv4 address inet_aton(3) reads from text (1 to 4 parts, each
    decimal, 0x-hex or 0-octal, the last filling the remaining bytes), or None."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        # Digits only: int() alone would also take signs, "_" and spaces ("0-12").
        if part[:2] == "0x" and len(part) > 2 and all(c in _LOWER_HEX for c in part[2:]):
            values.append(int(part[2:], 16))
        elif len(part) > 1 and part[0] == "0" and all(c in "01234567" for c in part[1:]):
            values.append(int(part[1:], 8))
        elif part and (part == "0" or part[0] != "0") and all(c in "0123456789" for c in part):
            values.append(int(part))
        else:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for i, value in enumerate(head):
        number |= value << (8 * (3 - i))
    return number


@lru_cache(maxsize=4096)
def is_ip_address(host: str) -> bool:
    """True for an IPv4 or IPv6 address literal (without brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_aor(text: str, *, need_user: bool = False) -> SipUri:
    """An address of record as a person types it: ``bob@host`` or ``sip:bob@host``
    (``sips:`` too).  :class:`ParseError` when it is not a SIP URI, or with *need_user*
    when it has no user part."""
    value = text.strip()
    if not re.match(r"(?i)sips?:", value):
        value = "sip:" + value
    uri = SipUri.parse(value)
    if need_user and not uri.user:
        raise ParseError(400, "no user part in the address of record")
    return uri


def split_aor(aor: str) -> tuple[str, str]:
    """``sip:bob@example.com`` / ``bob@example.com`` (also ``<sips:...;params>``) ->
    (username, domain), the key of the silo's and the subscriber table's rows.

    The user part is kept as written; the domain is lower-cased and a port dropped, as
    Kamailio's m_store keys its rows.  ValueError when there is no user@domain."""
    s = aor.strip().strip("<>")
    low = s.lower()
    for prefix in ("sip:", "sips:"):
        if low.startswith(prefix):
            s = s[len(prefix) :]
            break
    s = s.split(";", 1)[0].split("?", 1)[0]
    user, at, host = s.rpartition("@")
    if not at or not user or not host:
        raise ValueError(f"not an address of record (user@domain): {aor!r}")
    if host.startswith("["):  # IPv6 reference: keep the brackets, drop a port after them
        host = host[: host.find("]") + 1] if "]" in host else host
    else:
        host = host.split(":", 1)[0]
    return user, host.lower()

"""Value-level helpers for :mod:`sipsilo.config`: listen addresses, hosts, SIP URIs, and
the "TOML value if it parses, else a string" rule used for the
environment and ``--set``.

Everything here is pure (no I/O) so the same checks serve the file, the
environment and the command line. Validators raise ``ValueError`` with a message
that already reads well after ``config error: section.key:``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

# RFC 3261 §25.1 hostname: labels of alphanumerics and '-', the top label starts
# with a letter. That rule is what rejects "1.2.3" (not an IPv4 address, and not
# a hostname either), instead of handing it to the resolver at startup.
_HOSTNAME_RE = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z](?:[a-z0-9-]*[a-z0-9])?\.?$", re.IGNORECASE
)
_LISTEN_PROTOS = ("udp", "tcp", "tls", "ws", "wss")


def normalise_host(text: str) -> str:
    """Return ``text`` as a canonical host (lower-case, IPv6 without brackets).

    Raises ValueError if it is neither an IP address nor an RFC 3261 hostname.
    """
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ValueError(f"bad IPv6 address {quote(text)}") from None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(host):
        raise ValueError(f"bad host {quote(text)}")
    return host.lower().rstrip(".")


def _split_hostport(text: str) -> tuple[str, str | None]:
    """Split "host[:port]" / "[v6][:port]" without validating either part."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed '['")
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("junk after ']'")
        return text[: end + 1], (rest[1:] if rest else None)
    if text.count(":") > 1:
        # A bare IPv6 address would make the port ambiguous; RFC 3261 brackets it.
        raise ValueError("IPv6 addresses must be written in brackets")
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def _parse_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"bad port {quote(text)}")
    return int(text)


@dataclass(frozen=True)
class ListenAddress:
    """One ``[server] listen`` entry, "proto:host:port" (``udp:[::1]:5060`` for IPv6)."""

    proto: str  # "udp", "tcp", "tls", "ws" or "wss"
    host: str  # IP address or hostname; IPv6 without brackets
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        """AF_INET6 for IPv6 literals, AF_INET otherwise (hostnames resolve as IPv4)."""
        try:
            if ipaddress.ip_address(self.host).version == 6:
                return socket.AF_INET6
        except ValueError:
            pass
        return socket.AF_INET

    @property
    def is_wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::")

    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.proto}:{self.hostport()}"

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        proto, sep, rest = text.partition(":")
        try:
            if not sep or proto.lower() not in _LISTEN_PROTOS:
                raise ValueError("protocol must be udp, tcp, tls, ws or wss")
            host, port = _split_hostport(rest)
            if port is None:
                raise ValueError("missing port")
            return cls(proto.lower(), normalise_host(host), _parse_port(port))
        except ValueError as exc:
            # One message shape for every failure, as the contract asks; the
            # detail after the colon tells the user which part is wrong.
            raise ValueError(f"bad listen address {quote(text)} ({exc})") from None


def parse_listen(value: Any) -> ListenAddress:
    if isinstance(value, ListenAddress):
        return value
    if not isinstance(value, str):
        raise ValueError(f'expected a string "proto:host:port" (got {quote(value)})')
    return ListenAddress.parse(value)


# sip:/sips: URI, loosely checked: [userinfo@]host[:port][;params][?headers].
# The real parser lives in sipsilo.sip; config only needs to catch typos early.
_SIP_URI_RE = re.compile(
    r"^(?P<scheme>sips?):(?:(?P<userinfo>[^@;?\s]+)@)?(?P<hostport>[^;?\s]+)"
    r"(?P<params>;[^?\s]*)?(?P<headers>\?\S*)?$",
    re.IGNORECASE,
)


def check_sip_uri(value: str) -> str:
    match = _SIP_URI_RE.match(value)
    if match is None:
        raise ValueError(f"not a SIP URI {quote(value)} (expected sip:user@host[:port])")
    try:
        host, port = _split_hostport(match["hostport"])
        normalise_host(host)
        if port is not None:
            _parse_port(port)
    except ValueError as exc:
        raise ValueError(f"not a SIP URI {quote(value)} ({exc})") from None
    return value


def parse_cli_value(text: str) -> Any:
    """A value from ``--set`` or the environment: a TOML value if it parses, else the string.

    ``60`` is an int, ``true`` a bool, ``["udp:[::1]:5070"]`` a list, while
    ``sip:reg@example.com`` or ``debug`` (not TOML) stay strings. TOML dates and
    times are kept as the original text: no key takes a date, and "2024-01-01"
    meant as a string should not turn into a type error.
    """
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if isinstance(value, datetime | date | time):
        return text
    return value


def quote(value: Any) -> str:
    """Render a value as it would be written in TOML, for error messages."""
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(quote(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {quote(v)}" for k, v in value.items()) + "}"
    return repr(value)

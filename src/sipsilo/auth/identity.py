"""One spelling per account: the identity that lookups, blocking and replay all key on.

A digest ``username`` may come as ``bob``, ``bob@`` or ``bob@example.com`` (clients
differ; sipsak sends ``bob@``), and a URI user may carry escapes (``b%6Fb``). If each
spelling were its own key, each would get its own failure budget. RFC 3261 §19.1.4 says
which spellings are one: the user part compares case-sensitively after its escapes are
decoded, the host case-insensitively (and an IP address by value). :class:`Identity`
holds that one form, and :attr:`Identity.key` is its text, the same in every process
and instance, so that state kept per identity can later move to a shared store as is.

Spellings that are *not* the same account (``bob ``, ``BOB``) stay different here; the
subscriber lookup then has to refuse them too, whatever the database's collation says
(:func:`sipsilo.auth.subscribers.exact_row`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sipsilo.sip.errors import ParseError
from sipsilo.sip.uri import USER_SAFE, SipUri, canonical_host, escape, format_host, unescape

__all__ = ["Identity", "normalise_domain"]


def normalise_domain(host: str) -> str:
    """A host as subscriber rows store it: names lower-cased, IP addresses in their
    one text form, IPv6 in brackets (``[::1]``, as ``sipsilo user add`` writes it)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return format_host(canonical_host(bare))


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    return host.split(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True)
class Identity:
    """A user of one of our domains: the user part decoded, the domain normalised."""

    user: str
    domain: str

    @property
    def key(self) -> str:
        """``sip:user@domain`` with the user re-escaped one way: unambiguous text."""
        return f"sip:{escape(self.user, USER_SAFE)}@{self.domain}"

    def __str__(self) -> str:
        return f"{self.user}@{self.domain}"

    @classmethod
    def of(cls, user: str, domain: str) -> Identity:
        """From a user part as written (escapes allowed) and a host."""
        with contextlib.suppress(ParseError):  # a bad escape is kept: names nobody
            user = unescape(user, "user")
        return cls(user, normalise_domain(domain))

    @classmethod
    def from_uri(cls, uri: SipUri) -> Identity:
        """The identity a From or To claims (a SipUri's user is already decoded)."""
        return cls(uri.user or "", normalise_domain(uri.host))

    @classmethod
    def from_digest(cls, username: str, default_domain: str) -> Identity:
        """The identity a digest ``username`` names: ``bob``, ``bob@`` or ``bob@host``
        (a port after the host is ignored); without a host, *default_domain* (the
        claimed AoR's)."""
        user, _, host = username.partition("@")
        return cls.of(user, _strip_port(host) if host else default_domain)

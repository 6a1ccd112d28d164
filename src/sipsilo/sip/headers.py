"""An ordered, case-insensitive SIP header collection.

Headers are kept as a flat list of ``(canonical name, raw value)`` exactly as
they arrived: nothing is parsed here, so unknown headers survive untouched
and in order, and the common case costs one list append per line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache

from sipsilo.sip.grammar import split_list

# RFC 3261 §7.3.3 plus the compact forms registered since (RFC 3265, 3515,
# 3841, 3892, 3903, 4028, 4474, 4538, 4964, 5626...).
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_LONG_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
    "Allow", "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
    "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
    "Error-Info", "Event", "Expires", "From", "Identity", "Identity-Info",
    "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version",
    "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
    "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization",
    "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By",
    "Reject-Contact", "Replaces", "Reply-To", "Request-Disposition", "Require",
    "Retry-After", "Route", "RSeq", "Security-Client", "Security-Server",
    "Security-Verify", "Server", "Service-Route", "Session-Expires", "SIP-ETag",
    "SIP-If-Match", "Subject", "Subscription-State", "Supported", "Timestamp",
    "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)

_CANONICAL: dict[str, str] = {n.lower(): n for n in _LONG_NAMES}
_CANONICAL.update(COMPACT_FORMS)

# Headers whose grammar is `#element`, so a comma separates values. Everything
# else (auth challenges, Date, Retry-After, unknown headers) keeps its commas.
LIST_HEADERS = frozenset(
    n.lower()
    for n in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language",
        "Alert-Info", "Allow", "Allow-Events", "Call-Info", "Contact",
        "Content-Encoding", "Content-Language", "Error-Info", "In-Reply-To",
        "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Proxy-Require",
        "Reason", "Record-Route", "Reject-Contact", "Request-Disposition",
        "Require", "Route", "Security-Client", "Security-Server",
        "Security-Verify", "Service-Route", "Supported", "Unsupported", "Via",
        "Warning",
    )
)


# Headers that assert who sent a request or who it is on behalf of (RFC 3325,
# the Remote-Party-ID draft, RFC 8224, 7044, 3892, 5806). A recipient
# believes them, so they are worth something only from a network that is
# trusted to set them; from anyone else they are claims nobody checked.
IDENTITY_HEADERS = frozenset(
    n.lower()
    for n in (
        "P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID", "Identity",
        "Identity-Info", "History-Info", "Referred-By", "Diversion",
    )
)


def strip_identity(headers: Headers) -> list[str]:
    """Remove every identity assertion (IDENTITY_HEADERS); the names removed."""
    found = [name for name, _ in headers.items() if name.lower() in IDENTITY_HEADERS]
    for name in dict.fromkeys(found):
        headers.remove(name)
    return found


@lru_cache(maxsize=1024)
def canonical_name(name: str) -> str:
    """``"v"`` -> ``"Via"``, ``"call-id"`` -> ``"Call-ID"``; unknown names unchanged."""
    low = name.lower()
    canon = _CANONICAL.get(low)
    if canon is not None:
        return canon
    return name


@lru_cache(maxsize=1024)
def _key(name: str) -> str:
    low = name.lower()
    canon = _CANONICAL.get(low)
    return canon.lower() if canon is not None else low


class Headers:
    """Ordered multi-map of header fields.

    ``version`` increases on every mutation, and ``changed(name)`` tells the
    version at which that one header last changed, so messages can cache
    parsed views of header values and notice when they go stale -- without
    re-parsing From and CSeq because a proxy touched the Via.
    """

    __slots__ = ("_changed", "_items", "version")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # Each entry: [lower-case canonical key, canonical name, value]
        self._items: list[tuple[str, str, str]] = []
        self.version = 0
        self._changed: dict[str, int] = {}
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_canonical(cls, entries: list[tuple[str, str, str]]) -> Headers:
        # Parser fast path: entries are already canonicalised. (cls(), not
        # cls.__new__(cls): the compiled build's classes have no __new__ to call.)
        h = cls()
        h._items = entries
        return h

    def _bump(self, key: str) -> None:
        self.version += 1
        self._changed[key] = self.version

    def changed(self, key: str) -> int:
        """Version at which the header with lower-case canonical ``key`` last
        changed (0: never since parsing)."""
        return self._changed.get(key, 0)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field value for ``name`` (the whole line, not split)."""
        key = _key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; comma lists are split for list headers."""
        key = _key(name)
        values = [v for k, _, v in self._items if k == key]
        if key in LIST_HEADERS:
            out: list[str] = []
            for v in values:
                out.extend(split_list(v, canonical_name(name)))
            return out
        return values

    def get_lines(self, name: str) -> list[str]:
        """Every field line value of ``name`` as received, never comma-split."""
        key = _key(name)
        return [v for k, _, v in self._items if k == key]

    def add(self, name: str, value: str) -> None:
        canon = canonical_name(name)
        key = _key(canon)
        self._items.append((key, canon, value))
        self.version += 1
        self._changed[key] = self.version

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first field of ``name`` (or at the top if absent)."""
        canon = canonical_name(name)
        key = canon.lower()
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items.insert(i, (key, canon, value))
                break
        else:
            self._items.insert(0, (key, canon, value))
        self._bump(key)

    def set(self, name: str, value: str) -> None:
        """Replace every field of ``name`` with one, keeping the first position."""
        canon = canonical_name(name)
        key = canon.lower()
        out: list[tuple[str, str, str]] = []
        placed = False
        for entry in self._items:
            if entry[0] == key:
                if not placed:
                    out.append((key, canon, value))
                    placed = True
            else:
                out.append(entry)
        if not placed:
            out.append((key, canon, value))
        self._items = out
        self._bump(key)

    def set_all(self, name: str, values: Iterable[str]) -> None:
        """Replace every field of ``name`` with one line per value, at the
        position of the first existing field (or the end)."""
        canon = canonical_name(name)
        key = canon.lower()
        new = [(key, canon, v) for v in values]
        pos = next((i for i, e in enumerate(self._items) if e[0] == key), len(self._items))
        kept = [e for e in self._items[:pos] if e[0] != key]
        tail = [e for e in self._items[pos:] if e[0] != key]
        self._items = kept + new + tail
        self._bump(key)

    def remove(self, name: str) -> None:
        key = _key(name)
        self._items = [e for e in self._items if e[0] != key]
        self._bump(key)

    def remove_first(self, name: str) -> str | None:
        """Remove the first field line of ``name`` and return its value."""
        key = _key(name)
        for i, (k, _, v) in enumerate(self._items):
            if k == key:
                del self._items[i]
                self._bump(key)
                return v
        return None

    def pop_first_value(self, name: str) -> str | None:
        """Remove the first *element* of a list header (e.g. the top Via).

        Unlike remove_first this handles ``Via: a, b`` on one line: only
        ``a`` goes, ``b`` stays.
        """
        key = _key(name)
        for i, (k, canon, v) in enumerate(self._items):
            if k == key:
                parts = split_list(v, canon) if key in LIST_HEADERS else [v]
                if len(parts) <= 1:
                    del self._items[i]
                else:
                    self._items[i] = (k, canon, ", ".join(parts[1:]))
                self._bump(key)
                return parts[0] if parts else ""
        return None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        # A plain loop: any() over a generator costs a frame per item here.
        for k, _, _ in self._items:  # noqa: SIM110
            if k == key:
                return True
        return False

    def items(self) -> list[tuple[str, str]]:
        """All fields as (canonical name, value), in order."""
        return [(n, v) for _, n, v in self._items]

    def copy(self) -> Headers:
        h = Headers.__new__(Headers)
        h._items = list(self._items)
        h.version = 0
        h._changed = {}
        return h

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

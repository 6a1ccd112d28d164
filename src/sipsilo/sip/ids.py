"""Generators for the random identifiers SIP needs (branch, tag, Call-ID)."""

from __future__ import annotations

import hashlib
import os

# RFC 3261 §8.1.1.7: the magic cookie tells peers the branch is globally unique.
BRANCH_MAGIC = "z9hG4bK"


class _RandomHex:
    """Cryptographically random hex digits, read from the OS in bulk.

    A busy server needs several identifiers per message; one getrandom()
    system call per 4 KiB instead of one per identifier.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = ""
        self._pos = 0

    def take(self, digits: int) -> str:
        if self._pos + digits > len(self._buf):
            self._buf = os.urandom(4096).hex()
            self._pos = 0
        out = self._buf[self._pos : self._pos + digits]
        self._pos += digits
        return out


_hex = _RandomHex()


def new_branch() -> str:
    """A fresh RFC 3261 branch parameter value."""
    return BRANCH_MAGIC + _hex.take(20)


def new_token() -> str:
    """A short random name for this server process, put in its branches."""
    return _hex.take(8)


def uri_hash(request_uri: str) -> str:
    data = request_uri.encode("utf-8", "surrogateescape")
    return hashlib.blake2s(data, digest_size=4).hexdigest()


def loop_branch(token: str, request_uri: str, tag: str = "") -> str:
    """A branch naming this server (token) and the Request-URI it was sent to.

    RFC 3261 §16.6 step 8: if the request comes back to us with one of our
    branches for the same Request-URI, it has looped; a spiral (back to us
    with another Request-URI) is legitimate and passes. *tag* (two hex digits,
    at BRANCH_TAG_OFFSET) names the worker process that sent the request, so
    that its responses are handed to that process (see workers.keys).
    """
    return f"{BRANCH_MAGIC}{token}.{uri_hash(request_uri)}.{tag}{_hex.take(12)}"


# Where loop_branch puts its tag: magic cookie, 8-character token, ".",
# 8-character Request-URI hash, ".".
BRANCH_TAG_OFFSET = len(BRANCH_MAGIC) + 8 + 1 + 8 + 1


def is_loop(token: str, request_uri: object, branches: list[str]) -> bool:
    """Whether one of branches is ours for request_uri (see loop_branch; its
    ``str()`` is the URI). Almost no request carries a branch of ours: only
    those pay for the Request-URI's text and hash."""
    prefix = f"{BRANCH_MAGIC}{token}."
    mine = [b for b in branches if b.startswith(prefix)]
    if not mine:
        return False
    mark = f"{prefix}{uri_hash(str(request_uri))}."
    return any(b.startswith(mark) for b in mine)


def new_tag() -> str:
    """A fresh From/To tag (RFC 3261 §19.3 wants at least 32 random bits)."""
    return _hex.take(16)


def new_call_id(host: str) -> str:
    """A fresh Call-ID (RFC 3261 §8.1.1.4: cryptographically random is
    recommended); the host suffix keeps ids unique across servers."""
    token = _hex.take(32)
    return f"{token}@{host}" if host else token

"""Generators for the random identifiers SIP needs (branch, tag, Call-ID)."""

from __future__ import annotations

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


def new_tag() -> str:
    """A fresh From/To tag (RFC 3261 §19.3 wants at least 32 random bits)."""
    return _hex.take(16)


def new_call_id(host: str) -> str:
    """A fresh Call-ID (RFC 3261 §8.1.1.4: cryptographically random is
    recommended); the host suffix keeps ids unique across servers."""
    token = _hex.take(32)
    return f"{token}@{host}" if host else token

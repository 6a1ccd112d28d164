"""Generators for the random identifiers SIP needs (branch, tag, Call-ID)."""

from __future__ import annotations

import secrets

# RFC 3261 §8.1.1.7: the magic cookie tells peers the branch is globally unique.
BRANCH_MAGIC = "z9hG4bK"


def new_branch() -> str:
    """A fresh RFC 3261 branch parameter value."""
    return BRANCH_MAGIC + secrets.token_hex(10)


def new_tag() -> str:
    """A fresh From/To tag (RFC 3261 §19.3 wants at least 32 random bits)."""
    return secrets.token_hex(8)


def new_call_id(host: str) -> str:
    """A fresh Call-ID; the host suffix keeps ids unique across servers."""
    token = secrets.token_hex(16)
    return f"{token}@{host}" if host else token

"""``sipsilo user ...``: subscriber administration on the database directly.

The table is in the silo's database (``[msilo] db_url``: a SQLite file, MySQL/MariaDB or
PostgreSQL) and is created (or a Kamailio one adopted) on first use. Works while servers
run on the same database (SQLite: WAL and busy_timeout, as the silo admin commands,
:mod:`sipsilo.admin.silo`); a
running server reads each user at each authentication, so a new password or a removed
user counts at once, and with "auto" the first user turns authentication on within a
second (:mod:`sipsilo.auth.auto`). An AoR is stored in its one normalised spelling
(:class:`~sipsilo.auth.identity.Identity`: escapes decoded, host lower-cased). Passwords
are hashed here with the configured realm and never stored in plaintext, printed or
logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sipsilo.auth.identity import Identity
from sipsilo.auth.subscribers import Subscribers, open_blocking
from sipsilo.config import Config
from sipsilo.sip.uri import split_aor

__all__ = ["subscribers_init", "user_add", "user_list", "user_passwd", "user_remove"]


@contextmanager
def _open(config: Config) -> Iterator[Subscribers]:
    store = open_blocking(config)
    try:
        store.ensure_schema()
        yield store
    finally:
        store.close()


def subscribers_init(config: Config) -> str:
    """Create the subscriber table (or adopt Kamailio's); idempotent (``sipsilo db init``)."""
    with _open(config) as store:
        return store.table


def _account(aor: str) -> tuple[str, str]:
    """(user, domain) of an AoR as the server looks it up."""
    who = Identity.of(*split_aor(aor))
    return who.user, who.domain


def _check_password(password: str) -> None:
    if not password:
        raise ValueError("empty password")


def user_add(config: Config, aor: str, password: str) -> str:
    user, domain = _account(aor)
    _check_password(password)
    with _open(config) as store:
        first = store.count() == 0
        store.add(user, domain, config.auth_realm(), password)
    note = ""
    if first and config.auth.enabled == "auto":
        note = " (first user: a running server turns authentication on within a second)"
    return f"added {user}@{domain} (realm {config.auth_realm()}){note}"


def user_passwd(config: Config, aor: str, password: str) -> str:
    user, domain = _account(aor)
    _check_password(password)
    with _open(config) as store:
        if not store.set_password(user, domain, config.auth_realm(), password):
            raise LookupError(f"no user {user}@{domain}")
    return f"password of {user}@{domain} changed"


def user_remove(config: Config, aor: str) -> str:
    user, domain = _account(aor)
    with _open(config) as store:
        if not store.remove(user, domain):
            raise LookupError(f"no user {user}@{domain}")
    return f"removed {user}@{domain}"


def user_list(config: Config) -> list[str]:
    """One line per user: ``user@domain`` and which hashes it has (never the hashes)."""
    out = []
    with _open(config) as store:
        for s in store.list():
            have = [name for name, v in (("md5", s.ha1), ("sha256", s.ha1_sha256),
                                         ("plaintext", s.password)) if v]
            out.append(f"{s.username}@{s.domain}\t{','.join(have) or 'no credentials'}")
    return out

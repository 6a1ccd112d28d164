"""``sipsilo user ...``: subscriber administration on the database directly.

Works while a server runs on the same SQLite file (WAL and busy_timeout, as the silo
admin commands). Passwords are hashed here with the configured realm and never
stored in plaintext, printed or logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sipsilo.auth.subscribers import SqliteSubscribers
from sipsilo.silo.admin import parse_aor

__all__ = ["user_add", "user_list", "user_passwd", "user_remove"]


@contextmanager
def _open(config: Any) -> Iterator[SqliteSubscribers]:
    path = config.silo_db_path()
    if path is None:
        raise ValueError("the subscriber table needs a SQLite msilo.db_url")
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    store = SqliteSubscribers(path, config.auth.db_table)
    try:
        store.ensure_schema()
        yield store
    finally:
        store.close()


def _check_password(password: str) -> None:
    if not password:
        raise ValueError("empty password")


def user_add(config: Any, aor: str, password: str) -> str:
    user, domain = parse_aor(aor)
    _check_password(password)
    with _open(config) as store:
        first = store.count() == 0
        store.add(user, domain, config.auth_realm(), password)
    note = ""
    if first and config.auth.enabled == "auto":
        note = " (first user: restart the server to turn authentication on)"
    return f"added {user}@{domain} (realm {config.auth_realm()}){note}"


def user_passwd(config: Any, aor: str, password: str) -> str:
    user, domain = parse_aor(aor)
    _check_password(password)
    with _open(config) as store:
        if not store.set_password(user, domain, config.auth_realm(), password):
            raise LookupError(f"no user {user}@{domain}")
    return f"password of {user}@{domain} changed"


def user_remove(config: Any, aor: str) -> str:
    user, domain = parse_aor(aor)
    with _open(config) as store:
        if not store.remove(user, domain):
            raise LookupError(f"no user {user}@{domain}")
    return f"removed {user}@{domain}"


def user_list(config: Any) -> list[str]:
    """One line per user: ``user@domain`` and which hashes it has (never the hashes)."""
    out = []
    with _open(config) as store:
        for s in store.list():
            have = [name for name, v in (("md5", s.ha1), ("sha256", s.ha1_sha256),
                                         ("plaintext", s.password)) if v]
            out.append(f"{s.username}@{s.domain}\t{','.join(have) or 'no credentials'}")
    return out

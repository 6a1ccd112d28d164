"""Digest authentication of local users (RFC 3261 §22) against a subscriber table.

* :mod:`sipsilo.sip.digest` has the pure maths and header text;
* :mod:`.nonce` makes and checks nonces, and refuses replays;
* :mod:`.subscribers` is the Kamailio-compatible ``subscriber`` table, in the silo's
  database (SQLite, MySQL/MariaDB or PostgreSQL);
* :mod:`.policy` gives the verdict on one request (``RouteContext.auth_check``);
* :mod:`.admin` backs ``sipsilo user add|passwd|remove|list``.

:func:`start_auth` is what the app calls: it decides whether authentication is on.
"""

from __future__ import annotations

import logging
from typing import Any

from sipsilo.auth.nonce import NonceManager, load_secret
from sipsilo.auth.policy import Authenticator, Verdict, consume_credentials
from sipsilo.auth.subscribers import SqliteSubscribers, SqlSubscribers, Subscriber, Subscribers
from sipsilo.silo.sqlbase import StoreUnavailable, open_pool, parse_sql_url

__all__ = ["Authenticator", "NonceManager", "SqlSubscribers", "SqliteSubscribers", "Subscriber",
           "Subscribers", "Verdict", "consume_credentials", "start_auth"]

log = logging.getLogger("sipsilo.auth")

OFF_WARNING = ("authentication is OFF: anyone can register as any user and read their "
               "stored messages")


async def start_auth(config: Any) -> tuple[Authenticator | None, Subscribers | None]:
    """(authenticator or None when off, the subscriber store to ``aclose`` at shutdown).

    The subscriber table is in the silo's database (``[msilo] db_url``: SQLite, MySQL/
    MariaDB or PostgreSQL); it is created, or a Kamailio one adopted, here.
    """
    cfg = config.auth
    subscribers: Subscribers
    path = config.silo_db_path()
    if path is not None:
        subscribers = SqliteSubscribers(path, cfg.db_table)
    else:
        url = parse_sql_url(str(config.msilo.db_url))
        subscribers = SqlSubscribers(open_pool(url, 1, max(2, config.msilo.db_pool_max // 2)),
                                     cfg.db_table)
    try:
        if isinstance(subscribers, SqlSubscribers):
            try:
                await subscribers.open()
            except StoreUnavailable as exc:
                raise StoreUnavailable(f"msilo.db_url: {exc}") from None
            await subscribers.aensure_schema()
            users = await subscribers.acount()
        else:
            subscribers.ensure_schema()
            users = subscribers.count()
    except BaseException:
        await subscribers.aclose()
        raise
    enabled = cfg.enabled if isinstance(cfg.enabled, bool) else users > 0
    if not enabled:
        why = "[auth] enabled = false" if cfg.enabled is False else "no users in the " \
            f"{cfg.db_table} table; add one with 'sipsilo user add USER@DOMAIN'"
        log.warning("%s (%s)", OFF_WARNING, why)
        await subscribers.aclose()  # nothing asks it until a restart
        return None, None
    realm = config.auth_realm()
    nonces = NonceManager(load_secret(config.data_dir), realm, cfg.nonce_expires)
    auth = Authenticator(
        subscribers, realm, nonces, algorithms=tuple(cfg.algorithms),
        trusted=tuple(cfg.trusted), max_failures=cfg.max_failures, block_time=cfg.block_time,
    )
    if users == 0:
        log.warning("authentication is on but the %s table is empty: nobody can register",
                    cfg.db_table)
    log.info("authentication on: realm %r, %d users, algorithms %s%s", realm, users,
             "/".join(cfg.algorithms),
             f", trusted {', '.join(cfg.trusted)}" if cfg.trusted else "")
    return auth, subscribers

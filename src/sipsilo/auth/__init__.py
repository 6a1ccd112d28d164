"""Digest authentication of local users (RFC 3261 §22) against a subscriber table.

* :mod:`sipsilo.sip.digest` has the pure maths and header text;
* :mod:`.nonce` makes and checks nonces, and refuses replays;
* :mod:`.subscribers` is the Kamailio-compatible ``subscriber`` table, in the silo's
  database (SQLite, MySQL/MariaDB or PostgreSQL);
* :mod:`.policy` gives the verdict on one request (``RouteContext.auth_check``);
* :mod:`.identity` is the one normalised spelling of an account;
* :mod:`.auto` turns ``enabled = "auto"`` on once the table has users;
* :mod:`.admin` backs ``sipsilo user add|passwd|remove|list``.

:func:`start_auth` is what the app calls: it decides whether authentication is on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sipsilo.auth.auto import AutoSwitch
from sipsilo.auth.nonce import NonceManager, load_secret
from sipsilo.auth.policy import Authenticator, Verdict, consume_credentials
from sipsilo.auth.subscribers import SqliteSubscribers, SqlSubscribers, Subscriber, Subscribers
from sipsilo.silo.sqlbase import StoreUnavailable, open_pool, parse_sql_url

__all__ = ["AuthSetup", "Authenticator", "AutoSwitch", "NonceManager", "SqlSubscribers",
           "SqliteSubscribers", "Subscriber", "Subscribers", "Verdict", "consume_credentials",
           "start_auth"]

log = logging.getLogger("sipsilo.auth")

OFF_WARNING = ("authentication is OFF: anyone can register as any user and read their "
               "stored messages")


@dataclass
class AuthSetup:
    """What :func:`start_auth` decided."""

    auth: Authenticator | None         # on now
    auto: AutoSwitch | None            # off now, "auto": on once the table has users
    subscribers: Subscribers | None    # to ``aclose`` at shutdown


async def start_auth(config: Any) -> AuthSetup:
    """Open the subscriber store and decide whether authentication is on.

    The subscriber table is in the silo's database (``[msilo] db_url``: SQLite, MySQL/
    MariaDB or PostgreSQL); it is created, or a Kamailio one adopted, here. With
    ``enabled = "auto"`` and no users yet, the store stays open for the
    :class:`AutoSwitch` to look at again.
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
        else:
            subscribers.ensure_schema()
        users = await _count(subscribers)
    except BaseException:
        await subscribers.aclose()
        raise
    if cfg.enabled is False:
        log.warning("%s ([auth] enabled = false)", OFF_WARNING)
        await subscribers.aclose()  # nothing asks it until a restart
        return AuthSetup(None, None, None)

    def make() -> Authenticator:
        return Authenticator(
            subscribers, config.auth_realm(),
            NonceManager(load_secret(config.data_dir), config.auth_realm(), cfg.nonce_expires),
            algorithms=tuple(cfg.algorithms), trusted=tuple(cfg.trusted),
            max_failures=cfg.max_failures, block_time=cfg.block_time,
        )

    if cfg.enabled == "auto" and users == 0:
        log.warning("%s (no users in the %s table; add one with 'sipsilo user add "
                    "USER@DOMAIN': authentication then turns on by itself)", OFF_WARNING,
                    cfg.db_table)
        load_secret(config.data_dir)  # made now, not in the middle of a request
        return AuthSetup(None, AutoSwitch(make, lambda: _count(subscribers)), subscribers)
    if users == 0:
        log.warning("authentication is on but the %s table is empty: nobody can register",
                    cfg.db_table)
    log.info("authentication on: realm %r, %d users, algorithms %s%s", config.auth_realm(),
             users, "/".join(cfg.algorithms),
             f", trusted {', '.join(cfg.trusted)}" if cfg.trusted else "")
    return AuthSetup(make(), None, subscribers)


async def _count(subscribers: Subscribers) -> int:
    if isinstance(subscribers, SqlSubscribers):
        return await subscribers.acount()
    return await asyncio.to_thread(subscribers.count)

"""Digest authentication of local users (RFC 3261 §22) against a subscriber table.

* :mod:`sipsilo.sip.digest` has the pure maths and header text;
* :mod:`.nonce` makes and checks nonces, and refuses replays;
* :mod:`.subscribers` is the Kamailio-compatible ``subscriber`` table, in the silo's
  database (SQLite, MySQL/MariaDB or PostgreSQL);
* :mod:`.policy` gives the verdict on one request (``RouteContext.auth_check``);
* :mod:`.shared` is where its replay and failure state lives (this process, the
  supervisor of the workers, or Redis: :mod:`.redis_state`);
* :mod:`.identity` is the one normalised spelling of an account;
* :mod:`.auto` turns ``enabled = "auto"`` on once the table has users;

:func:`start_auth` is what the app calls: it decides whether authentication is on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipsilo.auth.auto import AutoSwitch
from sipsilo.auth.nonce import NonceManager, load_secret
from sipsilo.auth.policy import Authenticator, Verdict, consume_credentials
from sipsilo.auth.shared import AuthState, StateUnavailable
from sipsilo.auth.subscribers import SqliteSubscribers, SqlSubscribers, Subscriber, Subscribers
from sipsilo.db.base import open_pool
from sipsilo.db.errors import StoreUnavailable
from sipsilo.db.url import mask_url

if TYPE_CHECKING:
    from sipsilo.config import Config  # the server's; domain code needs no transport

__all__ = ["AuthSetup", "AuthState", "Authenticator", "AutoSwitch", "NonceManager",
           "SqlSubscribers", "SqliteSubscribers", "StateUnavailable", "Subscriber", "Subscribers",
           "Verdict", "consume_credentials", "start_auth"]

log = logging.getLogger("sipsilo.auth")

OFF_WARNING = ("authentication is OFF: anyone can register as any user and read their "
               "stored messages")


@dataclass
class AuthSetup:
    """What :func:`start_auth` decided."""

    auth: Authenticator | None         # on now
    auto: AutoSwitch | None            # off now, "auto": on once the table has users
    subscribers: Subscribers | None    # to ``aclose`` at shutdown
    state: AuthState | None = None     # a shared replay/failure state, to ``aclose`` too


async def start_auth(config: Config, shared: AuthState | None = None) -> AuthSetup:
    """Open the subscriber store and decide whether authentication is on.

    The subscriber table is in the silo's database (``[msilo] db_url``: SQLite, MySQL/
    MariaDB or PostgreSQL); it is created, or a Kamailio one adopted, here. With
    ``enabled = "auto"`` and no users yet, the store stays open for the
    :class:`AutoSwitch` to look at again.

    The replay and failure state is Redis's when ``[cluster] redis_url`` is set (it
    must answer now: one line naming the key otherwise), else *shared* (a worker's
    link to its supervisor), else this process's own.
    """
    cfg = config.auth
    url = config.msilo_db
    subscribers = SqlSubscribers(open_pool(url, 1, max(2, config.msilo.db_pool_max // 2)),
                                 cfg.db_table)
    try:
        try:
            await subscribers.open()
        except StoreUnavailable as exc:
            raise url.unavailable(exc) from None
        await subscribers.aensure_schema()
        users = await subscribers.acount()
    except BaseException:
        await subscribers.aclose()
        raise
    if cfg.enabled is False:
        log.warning("%s ([auth] enabled = false)", OFF_WARNING)
        await subscribers.aclose()  # nothing asks it until a restart
        return AuthSetup(None, None, None)
    try:
        state = await _redis_state(config) or shared
    except BaseException:
        await subscribers.aclose()
        raise

    def make() -> Authenticator:
        return Authenticator(
            subscribers, config.auth_realm(),
            NonceManager(load_secret(config.data_dir), config.auth_realm(), cfg.nonce_expires),
            algorithms=tuple(cfg.algorithms), trusted=tuple(cfg.trusted),
            max_failures=cfg.max_failures, block_time=cfg.block_time, state=state,
        )

    if cfg.enabled == "auto" and users == 0:
        log.warning("%s (no users in the %s table; add one with 'sipsilo user add "
                    "USER@DOMAIN': authentication then turns on by itself)", OFF_WARNING,
                    cfg.db_table)
        load_secret(config.data_dir)  # made now, not in the middle of a request
        return AuthSetup(None, AutoSwitch(make, subscribers.acount), subscribers,
                         state)
    if users == 0:
        log.warning("authentication is on but the %s table is empty: nobody can register",
                    cfg.db_table)
    log.info("authentication on: realm %r, %d users, algorithms %s%s", config.auth_realm(),
             users, "/".join(cfg.algorithms),
             f", trusted {', '.join(cfg.trusted)}" if cfg.trusted else "")
    return AuthSetup(make(), None, subscribers, state)


async def _redis_state(config: Config) -> AuthState | None:
    url = config.cluster.redis_url
    if url is None:
        return None
    from sipsilo.auth.redis_state import RedisState, connect  # the redis client: only if used

    cfg = config.auth
    state = RedisState(connect(url), config.cluster.redis_prefix,
                       nonce_expires=cfg.nonce_expires, max_failures=cfg.max_failures,
                       block_time=cfg.block_time, where=mask_url(url))
    try:
        await state.ping()
    except StateUnavailable as exc:
        await state.aclose()
        raise StateUnavailable(f"cluster.redis_url: cannot connect to {exc}") from None
    log.info("replay and failure-blocking state shared in Redis %s (keys %s*)",
             mask_url(url), config.cluster.redis_prefix)
    return state

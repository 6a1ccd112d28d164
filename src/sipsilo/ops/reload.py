"""SIGHUP: read the configuration again and apply what can change while running.

Applied at once: ``[server] log_level`` and ``log_format``, the ``[auth]``
section (the subscriber store is reopened and ``enabled`` decided again),
``[server] route``
(the module is re-imported; if that fails the old route stays) and the admin
token file. Then every hook in ``Server.reload_hooks`` runs with the old and
the new configuration: that is where a listener that holds files (TLS
certificates) re-reads them. Everything else keeps its value until a restart,
and the keys that changed but were not applied are named in one log line.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from sipsilo.config import Config
from sipsilo.ops.logs import setup_logging

if TYPE_CHECKING:
    from sipsilo.app import Server

log = logging.getLogger("sipsilo.reload")

# A hook gets (old configuration, new configuration); it may be async.
ReloadHook = Callable[[Config, Config], Awaitable[None] | None]

RELOADED_SERVER_KEYS = ("log_level", "log_format", "route")
RELOADED_SECTIONS = ("auth",)
RELOADED_KEYS = frozenset({*(f"server.{k}" for k in RELOADED_SERVER_KEYS),
                           "http.admin_token_file"})


def flat(config: Config) -> dict[str, Any]:
    return {f"{section}.{key}": value
            for section, table in config.model_dump(mode="json").items()
            for key, value in table.items()}


def changed_keys(old: Config, new: Config) -> list[str]:
    a, b = flat(old), flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def not_reloadable(keys: Iterable[str]) -> list[str]:
    return [k for k in keys
            if k not in RELOADED_KEYS and k.partition(".")[0] not in RELOADED_SECTIONS]


def applied_config(old: Config, new: Config) -> Config:
    """*old* with the reloadable keys of *new*: what the server runs with after SIGHUP."""
    server = old.server.model_copy(
        update={k: getattr(new.server, k) for k in RELOADED_SERVER_KEYS})
    http = old.http.model_copy(update={"admin_token_file": new.http.admin_token_file})
    update: dict[str, Any] = {"server": server, "http": http}
    update.update({s: getattr(new, s) for s in RELOADED_SECTIONS})
    return old.model_copy(update=update)


def report(old: Config, new: Config) -> None:
    """The one log line about what a reload changed and what needs a restart."""
    keys = changed_keys(old, new)
    kept = not_reloadable(keys)
    applied = [k for k in keys if k not in kept]
    log.info("configuration reloaded%s", f" ({', '.join(applied)} changed)" if applied else "")
    if kept:
        log.warning("not reloaded, restart to apply: %s", ", ".join(kept))


def reload_route(spec: str | None) -> Any:
    """The route function of *spec*, its module imported afresh (a user's edit counts)."""
    from sipsilo.routing.loader import RouteLoadError, load_route

    if spec:
        name = spec.partition(":")[0]
        module = sys.modules.get(name)
        if module is not None:
            try:
                importlib.reload(module)
            except Exception as exc:  # the running route is a function object: it stays
                raise RouteLoadError(f"server.route: cannot import {name}: {exc}") from exc
    return load_route(spec)


async def reload_server(server: Server, new: Config, quiet: bool = False) -> None:
    """Apply *new* to a running single server or worker (see the module docstring)."""
    old = server.config
    applied = applied_config(old, new)
    worker = "" if server.worker is None else server.worker.name
    setup_logging(applied.server.log_level, applied.server.log_format, worker)
    try:
        server.dispatcher.route = reload_route(applied.server.route)
    except Exception as exc:
        log.error("route not reloaded, the old one stays: %s", exc)
        applied = applied.model_copy(update={"server": applied.server.model_copy(
            update={"route": old.server.route})})
    await _reload_auth(server, applied)
    server.config = applied
    server.services.config = applied
    for hook in list(server.reload_hooks):
        try:
            result = hook(old, new)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("reload hook %s failed", getattr(hook, "__qualname__", hook))
    if not quiet:
        report(old, new)


async def _reload_auth(server: Server, config: Config) -> None:
    from sipsilo.auth import start_auth

    try:
        setup = await start_auth(config)
    except Exception as exc:
        log.error("authentication settings not reloaded, the old ones stay: %s", exc)
        return
    auth, subscribers = setup.auth, setup.subscribers
    previous = server.services.auth
    if auth is not None and previous is not None and auth.realm == previous.realm \
            and auth.nonces.expires == previous.nonces.expires:
        # The same nonces stay good, so their replay counters must stay too (a
        # fresh table would accept a request seen before), and so do the
        # blocked (address, user) pairs.
        auth.nonces = previous.nonces
        previous.failures.max_failures = auth.failures.max_failures
        previous.failures.block_time = auth.failures.block_time
        auth.failures = previous.failures
    old_subscribers = server.subscribers
    server.services.auth, server.services.auth_auto = auth, setup.auto
    server.subscribers = subscribers
    if old_subscribers is not None:
        await old_subscribers.aclose()

"""Glue between a running server (app.Server) and the operations features.

* the control-channel commands beyond ``stats`` and ``location.list``:
  ``metrics``, ``ready``, ``location.remove`` and ``reload`` (the supervisor
  of several workers sends these to each worker);
* the HTTP endpoint of a single process (:func:`start_http`);
* SIGHUP (:func:`on_sighup`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sipsilo.config import Config
from sipsilo.control.server import Handler
from sipsilo.http.api import Api, Backend, load_token, location_key
from sipsilo.http.server import HttpServer
from sipsilo.ops.reload import reload_server
from sipsilo.ops.snapshot import process_metrics, process_ready

if TYPE_CHECKING:
    from sipsilo.app import Server

log = logging.getLogger("sipsilo.ops")


def control_handlers(server: Server) -> dict[str, Handler]:
    """The operations commands of one process's control channel."""

    async def metrics(message: dict[str, Any]) -> dict[str, Any]:
        return await process_metrics(server, table=bool(message.get("table", True)))

    async def ready(_: dict[str, Any]) -> dict[str, Any]:
        return await process_ready(server)

    async def location_remove(message: dict[str, Any]) -> dict[str, int]:
        """Unregister every contact of an AoR (`sipsilo location remove`, and
        ``DELETE /api/v1/location/{aor}``)."""
        aor = location_key(str(message.get("aor") or ""))
        gone = await server.location.remove_all(aor)
        if gone:
            log.info("%s unregistered by the administrator (%d contacts)", aor, len(gone))
        return {"removed": len(gone)}

    async def reload(message: dict[str, Any]) -> str:
        """A worker's share of the supervisor's SIGHUP: the new configuration, as JSON."""
        new = Config.model_validate_json(str(message["config"])).model_copy(
            update={"data_dir": server.config.data_dir})
        await reload_server(server, new, quiet=True)
        return "ok"

    return {"metrics": metrics, "ready": ready, "location.remove": location_remove,
            "reload": reload}


class ServerBackend:
    """A single server process as the HTTP endpoint's :class:`~sipsilo.http.api.Backend`."""

    def __init__(self, server: Server, handlers: dict[str, Handler]) -> None:
        self._server = server
        self._handlers = handlers

    @property
    def config(self) -> Config:
        return self._server.config

    async def metrics(self) -> dict[str, Any]:
        return await process_metrics(self._server)

    async def ready(self) -> dict[str, Any]:
        if self._server.stopping.is_set():
            return {"ready": False, "reason": "shutting down"}
        return await process_ready(self._server)

    async def control(self, message: dict[str, Any]) -> Any:
        return await self._handlers[str(message["cmd"])](message)


async def start_http(config: Config, backend: Backend) -> tuple[HttpServer, Api] | None:
    """The HTTP endpoint of ``[http] listen``, started; None when it is off."""
    address = config.http.address()
    if address is None:
        return None
    api = Api(backend, load_token(config))
    http = HttpServer(address[0], address[1], api.handle)
    try:
        await http.start()
    except OSError as exc:
        raise OSError(exc.errno, f"http.listen {config.http.listen}: {exc.strerror}") from None
    log.info("HTTP endpoint on http://%s/ (metrics, health, ready%s)", config.http.listen,
             ", admin API" if api.token else "")
    return http, api


def reload_token(api: Api | None, config: Config) -> None:
    """Re-read the admin token after SIGHUP (a rotated token counts at once)."""
    if api is None:
        return
    try:
        api.token = load_token(config)
    except Exception as exc:
        log.error("admin token not reloaded, the old one stays: %s", exc)


def on_sighup(callback: Callable[[], Any]) -> None:
    """Run *callback* (a coroutine function) on each SIGHUP, one reload at a time."""
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()
    tasks: set[asyncio.Task[Any]] = set()

    async def guarded() -> None:
        async with lock:
            started = time.monotonic()
            try:
                await callback()
            except Exception:
                log.exception("reload failed")
            log.debug("reload took %.3f s", time.monotonic() - started)

    def fire() -> None:
        task = loop.create_task(guarded())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, fire)


def ignore_sighup() -> None:
    """A worker: its supervisor passes reloads on; a SIGHUP to the process group
    (a closed terminal) must not end it."""
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: None)

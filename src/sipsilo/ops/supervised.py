"""Operations with ``[server] workers`` > 1: the supervisor answers for all workers.

The HTTP endpoint runs in the supervisor, off the workers' SIP path. A scrape
asks every worker for its figures over the control channel and adds them up
(:func:`sipsilo.ops.snapshot.merge`), so one scrape covers the whole server;
/ready is ready when the listeners are bound and every worker reaches the
database. SIGHUP to the supervisor reloads it and passes the new configuration
to every worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sipsilo.config import Config, ConfigError
from sipsilo.control.server import Handler
from sipsilo.http.api import location_key
from sipsilo.ops.logs import setup_logging
from sipsilo.ops.reload import applied_config, report
from sipsilo.ops.runtime import on_sighup, reload_token, start_http
from sipsilo.ops.snapshot import merge, table_metrics

if TYPE_CHECKING:
    from sipsilo.http.api import Api
    from sipsilo.http.server import HttpServer
    from sipsilo.workers.supervisor import Supervisor

log = logging.getLogger("sipsilo.supervisor")

Ask = Callable[[int, dict[str, Any]], Awaitable[Any]]


class SupervisorOps:
    """The supervisor's control commands, HTTP endpoint and SIGHUP handling."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.http: tuple[HttpServer, Api] | None = None
        on_sighup(self.reload)  # from the start: SIGHUP's default action would end us

    @property
    def config(self) -> Config:
        return self.sup.config

    async def _all(self, message: dict[str, Any]) -> list[Any]:
        return list(await asyncio.gather(*(self.sup._ask(i, message)
                                           for i in range(self.sup.n))))

    def handlers(self) -> dict[str, Handler]:
        async def metrics(_: dict[str, Any]) -> dict[str, Any]:
            return await self.metrics()

        async def ready(_: dict[str, Any]) -> dict[str, Any]:
            return await self.ready()

        async def location_remove(message: dict[str, Any]) -> Any:
            # Worker 0 removes and publishes the change to the others (or the
            # table is in a shared database): one worker is asked, as for a list.
            location_key(str(message.get("aor") or ""))  # a bad AoR: ValueError here
            return await self.sup._ask(0, message)

        return {"metrics": metrics, "ready": ready, "location.remove": location_remove}

    # ------------------------------------------------------------- the Backend
    async def metrics(self) -> dict[str, Any]:
        table = asyncio.ensure_future(table_metrics(self.config))
        snap = merge(await self._all({"cmd": "metrics", "table": False}))
        snap.update(await table)
        snap["workers"] = self.sup.n
        snap["dropped_datagrams"] = self.sup.dropped
        return snap

    async def ready(self) -> dict[str, Any]:
        if self.sup.stopping.is_set():
            return {"ready": False, "reason": "shutting down"}
        if not self.sup._handed_over:
            return {"ready": False, "reason": "SIP listeners not bound yet"}
        try:
            states = await asyncio.wait_for(self._all({"cmd": "ready"}), 5.0)
        except (OSError, TimeoutError, RuntimeError) as exc:
            return {"ready": False, "reason": f"a worker did not answer: {exc}"}
        for index, state in enumerate(states):
            if not state.get("ready"):
                return {"ready": False, "reason": f"worker {index}: {state.get('reason')}"}
        return {"ready": True, "reason": "ok"}

    async def control(self, message: dict[str, Any]) -> Any:
        handler = self.sup.control_handlers[str(message["cmd"])]
        return await handler(message)

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.http = await start_http(self.config, self)

    async def reload(self) -> None:
        if not self.sup._handed_over or self.sup.stopping.is_set():
            log.warning("SIGHUP ignored: the server is starting or stopping")
            return
        old = self.sup.config
        try:
            new = old.reload()
        except ConfigError as exc:
            log.error("configuration not reloaded: %s", exc.detail)
            return
        applied = applied_config(old, new)
        setup_logging(applied.server.log_level, applied.server.log_format)
        message = {"cmd": "reload", "config": new.model_dump_json()}
        results = await asyncio.gather(*(self.sup._ask(i, message) for i in range(self.sup.n)),
                                       return_exceptions=True)
        for index, result in enumerate(results):
            if isinstance(result, BaseException):
                log.error("worker %d did not reload: %s", index, result)
        self.sup.config = applied
        reload_token(None if self.http is None else self.http[1], applied)
        report(old, new)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http[0].aclose()
            self.http = None

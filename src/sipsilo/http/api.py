"""What the HTTP endpoint answers: /metrics, /health, /ready and the admin API.

The admin API (``/api/v1/``, bearer token) calls the same functions as the
CLI: the message store through :mod:`sipsilo.admin.silo` (run in a thread, as
they open their own short connection like ``sipsilo silo list``), the location
table and the statistics through the control channel's commands, answered by
the running process (or, with several workers, by the supervisor that asks
them). docs/openapi.yaml describes every route.
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from sipsilo.admin import silo as admin
from sipsilo.config import Config
from sipsilo.db.errors import StoreError
from sipsilo.http.server import HttpRequest, HttpResponse, error, json_response
from sipsilo.sip.errors import ParseError
from sipsilo.sip.uri import parse_aor, split_aor

log = logging.getLogger("sipsilo.http")


class HttpSetupError(Exception):
    """The endpoint cannot start as configured (one line naming the key)."""


class Backend(Protocol):
    """The running server as the endpoint sees it (app.Server or the supervisor)."""

    @property
    def config(self) -> Config: ...

    async def metrics(self) -> dict[str, Any]: ...

    async def ready(self) -> dict[str, Any]: ...

    async def control(self, message: dict[str, Any]) -> Any: ...


def load_token(config: Config) -> str | None:
    """The admin API's bearer token from ``[http] admin_token_file``; None: API off."""
    name = config.http.admin_token_file
    if name is None:
        return None
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = config.data_dir / path
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HttpSetupError(f"http.admin_token_file: cannot read {path}: {why}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise HttpSetupError(f"http.admin_token_file: {path} must hold one token of at least "
                             "16 characters without spaces")
    return token


def _iso(seconds: int | float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat().replace(
        "+00:00", "Z")


def message_view(row: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the API shows it: the body as text when it is UTF-8."""
    body: bytes = row["body"]
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "id": row["id"],
        "aor": row["aor"],
        "from": row["src_addr"],
        "to": row["dst_addr"],
        "content_type": row["ctype"],
        "body": text,
        "size": len(body),
        "call_id": row.get("callid") or None,
        "stored": _iso(row["inc_time"]),
        "expires": _iso(row["exp_time"]),
        "attempts": row.get("attempts", 0),
    }


def location_key(aor: str) -> str:
    """``bob@example.com`` / ``sip:bob@example.com`` -> the location table's key."""
    try:
        return parse_aor(aor, need_user=True).aor()
    except ParseError:
        raise ValueError(f"not an address of record (user@domain): {aor!r}") from None


Route = Callable[[HttpRequest, list[str]], Awaitable[HttpResponse]]

# (method, first path segment after /api/v1/, number of segments) -> Api method;
# the segments after the first are {aor} and then {id} (docs/openapi.yaml).
API_ROUTES: dict[tuple[str, str, int], str] = {
    ("GET", "silo", 1): "_silo_users",
    ("GET", "silo", 2): "_silo_list",
    ("DELETE", "silo", 2): "_silo_purge",
    ("DELETE", "silo", 3): "_silo_delete",
    ("GET", "location", 1): "_location_list",
    ("GET", "location", 2): "_location_list",
    ("DELETE", "location", 2): "_location_remove",
    ("GET", "stats", 1): "_stats",
}


class Api:
    def __init__(self, backend: Backend, token: str | None) -> None:
        self.backend = backend
        self.token = token

    async def handle(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/metrics":
            return await self._only_get(request, self._metrics)
        if path == "/health":
            return await self._only_get(request, self._health)
        if path == "/ready":
            return await self._only_get(request, self._ready)
        if path == "/api/v1" or path.startswith("/api/v1/"):
            return await self._api(request, path[len("/api/v1/"):].split("/"))
        return error(404, f"no such resource {request.path}")

    async def _only_get(self, request: HttpRequest,
                        fn: Callable[[], Awaitable[HttpResponse]]) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return error(405, f"{request.method} not allowed", [("allow", "GET, HEAD")])
        return await fn()

    async def _metrics(self) -> HttpResponse:
        try:
            snap = await self.backend.metrics()
        except (OSError, RuntimeError, TimeoutError) as exc:  # a worker did not answer
            log.warning("metrics not collected: %s", exc)
            return error(503, f"metrics not available: {exc}")
        # prometheus_client (9 MB) is loaded by the first scrape, not by every server.
        from sipsilo.ops.prometheus import CONTENT_TYPE, exposition

        return HttpResponse(200, exposition(snap), content_type=CONTENT_TYPE)

    async def _health(self) -> HttpResponse:
        return json_response(200, {"status": "alive"})

    async def _ready(self) -> HttpResponse:
        state = await self.backend.ready()
        return json_response(200 if state.get("ready") else 503, state)

    # ----------------------------------------------------------------- admin API
    def _authorised(self, request: HttpRequest) -> bool:
        assert self.token is not None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Constant-time: how much of a guess matched must not show in the timing.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode())

    async def _api(self, request: HttpRequest, parts: list[str]) -> HttpResponse:
        if self.token is None:
            return error(404, "the admin API is off: set [http] admin_token_file")
        if not self._authorised(request):
            return error(401, "missing or wrong bearer token",
                         [("www-authenticate", 'Bearer realm="sipsilo"')])
        method = request.method
        key = (method, parts[0], len(parts))
        name = API_ROUTES.get(key)
        if name is None:
            allowed = sorted({m for m, p, n in API_ROUTES if (p, n) == key[1:]})
            if allowed:
                return error(405, f"{method} not allowed", [("allow", ", ".join(allowed))])
            return error(404, f"no such resource {request.path}")
        route: Route = getattr(self, name)
        try:
            return await route(request, parts)
        except ValueError as exc:  # a bad AoR or id: the caller's to fix
            return error(400, str(exc))
        except (StoreError, OSError) as exc:
            log.warning("admin API %s %s: %s", method, request.path, exc)
            return error(503, f"not available: {exc}")

    async def _silo_users(self, request: HttpRequest, parts: list[str]) -> HttpResponse:
        users = await asyncio.to_thread(admin.waiting_users, self.backend.config)
        return json_response(200, [{**u, "oldest": _iso(u["oldest"])} for u in users])

    async def _silo_list(self, request: HttpRequest, parts: list[str]) -> HttpResponse:
        rows = await asyncio.to_thread(admin.list_messages, self.backend.config, parts[1])
        return json_response(200, [message_view(r) for r in rows])

    async def _silo_purge(self, request: HttpRequest, parts: list[str]) -> HttpResponse:
        count = await asyncio.to_thread(admin.purge, self.backend.config, aor=parts[1])
        log.info("admin API: purged %d stored messages of %s", count, parts[1])
        return json_response(200, {"deleted": count})

    async def _silo_delete(self, request: HttpRequest, parts: list[str]) -> HttpResponse:
        if not parts[2].isdigit():
            raise ValueError(f"not a message id: {parts[2]!r}")
        message_id = int(parts[2])
        config = self.backend.config
        row = await asyncio.to_thread(admin.show_message, config, message_id)
        if row is None or row["aor"] != "@".join(split_aor(parts[1])):
            return error(404, f"no stored message {message_id} for {parts[1]}")
        if not await asyncio.to_thread(admin.delete_message, config, message_id):
            return error(404, f"no stored message {message_id} for {parts[1]}")
        log.info("admin API: deleted stored message %d of %s", message_id, parts[1],
                 extra={"message_id": message_id, "user": row["aor"]})
        return json_response(200, {"deleted": message_id})

    async def _location_list(self, request: HttpRequest, parts: list[str]) -> HttpResponse:
        aor = location_key(parts[1]) if len(parts) > 1 else None
        return json_response(200, await self.backend.control(
            {"cmd": "location.list", "aor": aor}))

    async def _location_remove(self, request: HttpRequest, parts: list[str]) -> HttpResponse:
        removed = await self.backend.control({"cmd": "location.remove", "aor": parts[1]})
        return json_response(200, removed)

    async def _stats(self, request: HttpRequest, parts: list[str]) -> HttpResponse:
        return json_response(200, await self.backend.control({"cmd": "stats"}))

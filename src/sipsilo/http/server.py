"""A small HTTP/1.1 server on asyncio streams, with h11 doing the protocol.

h11 is sans-IO like our SIP core: it parses and frames, this module only moves
bytes and enforces the limits an endpoint facing a monitoring network needs
(request body size, idle keep-alive time, concurrent connections). Handlers
get a :class:`HttpRequest` and return a :class:`HttpResponse`; anything they
raise becomes a JSON 500, never a traceback on the wire or a dead server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

import h11

log = logging.getLogger("sipsilo.http")

MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 30.0
MAX_CONNECTIONS = 64


@dataclass
class HttpRequest:
    method: str
    path: str  # percent-decoded path, no query
    headers: dict[str, str]  # lower-case names
    query: str = ""
    body: bytes = b""


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(status: int, doc: Any, headers: list[tuple[str, str]] | None = None
                  ) -> HttpResponse:
    return HttpResponse(status, json.dumps(doc, default=str).encode() + b"\n",
                        headers=headers or [])


def error(status: int, message: str, headers: list[tuple[str, str]] | None = None
          ) -> HttpResponse:
    return json_response(status, {"error": message}, headers)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class HttpServer:
    def __init__(self, host: str, port: int, handler: Handler) -> None:
        self.host = host
        self.port = port
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= MAX_CONNECTIONS:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        while True:
            try:
                request = await self._read_request(conn, reader)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint or 400
                    await self._send(conn, writer, error(status, f"bad request: {exc}"))
                return
            except _BodyTooLarge:
                await self._send(conn, writer, error(413, f"body larger than {MAX_BODY} bytes"))
                return
            if request is None:
                return
            try:
                response = await self._handler(request)
            except Exception as exc:
                log.exception("HTTP %s %s failed", request.method, request.path)
                response = error(500, f"internal error: {type(exc).__name__}")
            await self._send(conn, writer, response, head=request.method == "HEAD")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader
                            ) -> HttpRequest | None:
        request: HttpRequest | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(16384), IDLE_TIMEOUT)
                conn.receive_data(data)  # b"": end of stream
                continue
            if isinstance(event, h11.Request):
                target = event.target.decode("ascii", "replace")
                parts = urlsplit(target)
                request = HttpRequest(
                    method=event.method.decode("ascii", "replace").upper(),
                    path=unquote(parts.path),
                    query=parts.query,
                    headers={k.decode("latin-1").lower(): v.decode("latin-1")
                             for k, v in event.headers},
                )
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise _BodyTooLarge
            elif isinstance(event, h11.EndOfMessage):
                if request is not None:
                    request.body = bytes(body)
                return request
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    response: HttpResponse, head: bool = False) -> None:
        headers = [("content-type", response.content_type),
                   ("content-length", str(len(response.body))),
                   ("cache-control", "no-store"), *response.headers]
        try:
            reason = HTTPStatus(response.status).phrase.encode()
        except ValueError:
            reason = b""
        out = conn.send(h11.Response(status_code=response.status, headers=headers,
                                     reason=reason))
        if not head and response.body:
            out = (out or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
        writer.write(out)
        await writer.drain()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(BaseException):
                await task


class _BodyTooLarge(Exception):
    pass

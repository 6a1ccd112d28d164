"""SIP over WebSocket (RFC 7118) as a layer of a stream connection.

The framing is wsproto's (sans-IO, the h11 family); this module only adds
what RFC 7118 asks of a SIP server: the handshake must offer the ``sip``
subprotocol (else an HTTP error, never a silent hang), one WebSocket message
is one whole SIP message (text or binary; no Content-Length framing), our
messages go out as text when they are UTF-8 (browsers' JsSIP expects text),
pings are answered. A plain HTTP request that does not ask for an upgrade
gets a short explanation; anything that is not a SIP message, or a message
over the size limit, closes the connection.
"""

from __future__ import annotations

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from sipsilo.transport.layer import Inbound, Layer, LayerError

SUBPROTOCOL = "sip"
_NOT_UPGRADED = (b"This is a SIP over WebSocket endpoint (RFC 7118): open a WebSocket "
                 b"with the 'sip' subprotocol.\n")


def _http_answer(status: int, reason: str, body: bytes, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("ascii") + body


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """[websocket] allowed_origins: empty allows any; else exact match (no trailing /)."""
    if not allowed:
        return True
    return origin is not None and origin.strip().rstrip("/").lower() in allowed


def looks_like_sip(message: bytes) -> bool:
    """A request line ending in SIP/2.0 or a status line starting with it."""
    first = message.lstrip(b"\r\n").split(b"\r\n", 1)[0]
    return first.startswith(b"SIP/2.0 ") or first.endswith(b" SIP/2.0")


class WebSocketLayer(Layer):
    def __init__(self, allowed_origins: frozenset[str], max_message_size: int) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self._allowed = allowed_origins
        self._max = max_message_size
        self._open = False
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def ready(self) -> bool:
        return self._open

    def inbound(self, data: bytes) -> Inbound:
        try:
            self._ws.receive_data(data)
        except RemoteProtocolError as exc:
            if self._open:
                raise LayerError(f"bad WebSocket frame: {exc}") from None
            status = 426 if "Upgrade" in str(exc) else 400
            reason = "Upgrade Required" if status == 426 else "Bad Request"
            extra = "Upgrade: websocket\r\n" if status == 426 else ""
            return Inbound(reply=_http_answer(status, reason, _NOT_UPGRADED, extra), close=True,
                           error=f"HTTP request without a WebSocket upgrade ({exc})")
        got = Inbound()
        out: list[bytes] = []
        for event in self._ws.events():
            self._handle(event, got, out)
            if got.close:
                break
        got.reply = b"".join(out)
        return got

    def _handle(self, event: Event, got: Inbound, out: list[bytes]) -> None:
        if isinstance(event, Request):
            self._handshake(event, got, out)
        elif isinstance(event, TextMessage | BytesMessage):
            part = event.data.encode("utf-8") if isinstance(event.data, str) else bytes(event.data)
            self._size += len(part)
            if self._size > self._max:
                raise LayerError(f"WebSocket message over {self._max} bytes")
            self._parts.append(part)
            if event.message_finished:
                message = b"".join(self._parts)
                self._parts.clear()
                self._size = 0
                if not looks_like_sip(message):
                    raise LayerError("WebSocket message is not a SIP message")
                got.messages.append(message)
        elif isinstance(event, Ping):
            out.append(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self._ws.state == ConnectionState.REMOTE_CLOSING:
                out.append(self._ws.send(event.response()))
            got.close = True

    def _handshake(self, request: Request, got: Inbound, out: list[bytes]) -> None:
        origin = next((v.decode("latin-1") for k, v in request.extra_headers
                       if k.lower() == b"origin"), None)
        if SUBPROTOCOL not in (p.lower() for p in request.subprotocols):
            self._reject(400, b"the 'sip' WebSocket subprotocol is required (RFC 7118)\n",
                         got, out)
            got.error = "WebSocket handshake without the sip subprotocol"
        elif not origin_allowed(origin, self._allowed):
            self._reject(403, b"origin not allowed\n", got, out)
            got.error = f"WebSocket origin {origin!r} not in websocket.allowed_origins"
        else:
            out.append(self._ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
            self._open = True

    def _reject(self, status: int, body: bytes, got: Inbound, out: list[bytes]) -> None:
        headers = [(b"content-type", b"text/plain"), (b"connection", b"close")]
        out.append(self._ws.send(RejectConnection(status_code=status, headers=headers,
                                                  has_body=True)))
        out.append(self._ws.send(RejectData(data=body)))
        got.close = True

    def outbound(self, message: bytes) -> bytes:
        if not self._open:
            raise ConnectionError("WebSocket not open")
        try:
            event: TextMessage | BytesMessage = TextMessage(data=message.decode("utf-8"))
        except UnicodeDecodeError:
            event = BytesMessage(data=message)
        try:
            return self._ws.send(event)
        except LocalProtocolError as exc:  # closing
            raise ConnectionError(f"WebSocket closing: {exc}") from None

"""The client side of SIP over WebSocket (RFC 7118), for connections we open.

The server never opens a WebSocket (a browser cannot be called), but the
command-line phone (``sipsilo send/register -t ws|wss``) does: it is a stream
connection with this layer, under TLS for wss, exactly as the server's own
connections are built. The handshake asks for the ``sip`` subprotocol and a
server that does not grant it is refused: the SIP that would follow could not
be understood. A rejected handshake (403 for an origin, 400 without the
subprotocol) becomes a ``LayerError`` naming the status, so the user reads why.
"""

from __future__ import annotations

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, RejectConnection, RejectData, Request
from wsproto.utilities import RemoteProtocolError

from sipsilo.transport.layer import Inbound, LayerError
from sipsilo.transport.websocket import SUBPROTOCOL, WebSocketLayer


class WebSocketClientLayer(WebSocketLayer):
    """Opens the WebSocket (HTTP upgrade); then frames as the server's layer does."""

    def __init__(self, host: str, *, resource: str = "/", origin: str | None = None,
                 max_message_size: int = 65535) -> None:
        super().__init__(frozenset(), max_message_size)
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._host = host  # the Host header: "name:port" or "[v6]:port"
        self._resource = resource
        self._origin = origin
        self._refused: list[str] = []  # the status of a refused handshake, then its body

    def start(self) -> bytes:
        extra = [(b"origin", self._origin.encode("latin-1"))] if self._origin else []
        return self._ws.send(Request(host=self._host, target=self._resource,
                                     subprotocols=[SUBPROTOCOL], extra_headers=extra))

    def inbound(self, data: bytes) -> Inbound:
        try:
            self._ws.receive_data(data)
        except RemoteProtocolError as exc:
            raise LayerError(f"bad WebSocket answer from the server: {exc}") from None
        got = Inbound()
        out: list[bytes] = []
        try:
            for event in self._ws.events():
                self._handle(event, got, out)
                if got.close:
                    break
        except RemoteProtocolError as exc:
            raise LayerError(f"bad WebSocket answer from the server: {exc}") from None
        got.reply = b"".join(out)
        return got

    def _handle(self, event: Event, got: Inbound, out: list[bytes]) -> None:
        if isinstance(event, AcceptConnection):
            if (event.subprotocol or "").lower() != SUBPROTOCOL:
                raise LayerError("the server did not accept the 'sip' WebSocket subprotocol")
            self._open = True
        elif isinstance(event, RejectConnection):
            self._refused = [str(event.status_code)]
            if not event.has_body:
                self._refuse()
        elif isinstance(event, RejectData):
            self._refused.append(bytes(event.data).decode("utf-8", "replace"))
            if event.body_finished:
                self._refuse()
        elif not isinstance(event, Request):  # a server's event: never seen by a client
            super()._handle(event, got, out)

    def _refuse(self) -> None:
        status, body = self._refused[0], "".join(self._refused[1:]).strip()
        raise LayerError(f"WebSocket handshake refused: HTTP {status}"
                         + (f" ({body})" if body else ""))

"""The client WebSocket layer (sipsilo send/register -t ws|wss) against the server's,
in memory: the upgrade, SIP both ways, a refused upgrade, and WSS (TLS around it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.secure_clients import make_certs

from sipsilo.transport.layer import Layer, LayerError
from sipsilo.transport.tls import TlsContexts, TlsLayer, TlsSettings
from sipsilo.transport.websocket import WebSocketLayer
from sipsilo.transport.ws_client import WebSocketClientLayer

SIP = b"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nContent-Length: 2\r\n\r\nhi"
OK = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def _shake(client: Layer, server: Layer) -> None:
    """Pass the handshake bytes back and forth until neither side has more to say."""
    to_server = client.start()
    for _ in range(6):
        got = server.inbound(to_server)
        assert not got.close, got.error
        if not got.reply:
            break
        to_server = client.inbound(got.reply).reply
        if not to_server:
            break


def test_client_opens_with_the_sip_subprotocol_and_carries_whole_messages() -> None:
    client = WebSocketClientLayer("127.0.0.1:5060", origin="https://app.example.com")
    server = WebSocketLayer(frozenset({"https://app.example.com"}), 65536)
    assert not client.ready
    hello = client.start()
    assert b"\r\nsec-websocket-protocol: sip\r\n" in hello.lower()
    assert b"\r\norigin: https://app.example.com\r\n" in hello.lower()
    accept = server.inbound(hello).reply
    assert server.ready and client.inbound(accept).messages == [] and client.ready
    assert server.inbound(client.outbound(SIP)).messages == [SIP]
    assert client.inbound(server.outbound(OK)).messages == [OK]


def test_a_refused_upgrade_says_why() -> None:
    client = WebSocketClientLayer("127.0.0.1:5060", origin="https://evil.example")
    server = WebSocketLayer(frozenset({"https://app.example.com"}), 65536)
    refusal = server.inbound(client.start()).reply
    with pytest.raises(LayerError, match=r"^WebSocket handshake refused: HTTP 403 "
                                         r"\(origin not allowed\)$"):
        client.inbound(refusal)
    with pytest.raises(ConnectionError):
        client.outbound(SIP)  # never opened


def test_wss_sends_the_upgrade_inside_tls_once_the_handshake_is_done(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    contexts = TlsContexts(TlsSettings(certs.cert, certs.key, certs.ca), need_server=True)
    assert contexts.server is not None and contexts.client is not None
    server_ws = WebSocketLayer(frozenset(), 65536)
    server = TlsLayer(contexts.server, server_side=True, inner=server_ws)
    client = TlsLayer(contexts.client, server_side=False, server_hostname="127.0.0.1",
                      inner=WebSocketClientLayer("127.0.0.1:5061"))
    _shake(client, server)
    assert server.ready and client.ready and server_ws.ready
    assert server.inbound(client.outbound(SIP)).messages == [SIP]
    assert client.inbound(server.outbound(OK)).messages == [OK]

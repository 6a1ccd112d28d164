"""The sans-IO layers of stream connections, without sockets: TLS, WebSocket, pings."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.secure_clients import make_certs
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from sipsilo.sip.parser import StreamFramer
from sipsilo.transport.layer import LayerError
from sipsilo.transport.tls import TlsContexts, TlsLayer, TlsSettings
from sipsilo.transport.websocket import WebSocketLayer, looks_like_sip, origin_allowed

SIP = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n"


def _client(subprotocols: list[str], origin: str | None = None) -> tuple[WSConnection, bytes]:
    ws = WSConnection(ConnectionType.CLIENT)
    extra = [("Origin", origin)] if origin else []
    return ws, ws.send(Request(host="x", target="/", subprotocols=subprotocols,
                               extra_headers=extra))


def _open(layer: WebSocketLayer) -> WSConnection:
    ws, hello = _client(["sip"])
    got = layer.inbound(hello)
    ws.receive_data(got.reply)
    assert isinstance(next(ws.events()), AcceptConnection)
    assert layer.ready and not got.close
    return ws


def test_websocket_accepts_sip_and_carries_whole_messages() -> None:
    layer = WebSocketLayer(frozenset(), 65536)
    ws = _open(layer)
    got = layer.inbound(ws.send(TextMessage(data=SIP.decode())) + ws.send(BytesMessage(data=SIP)))
    assert got.messages == [SIP, SIP] and got.stream == b""
    ws.receive_data(layer.outbound(SIP))
    (event,) = ws.events()
    assert isinstance(event, TextMessage) and event.data == SIP.decode()
    ws.receive_data(layer.outbound(b"SIP/2.0 200 OK\r\n\r\n\xff"))
    assert isinstance(next(ws.events()), BytesMessage)  # not UTF-8: binary
    got = layer.inbound(ws.send(Ping(b"hi")))
    ws.receive_data(got.reply)
    assert isinstance(next(ws.events()), Pong)


def test_websocket_handshake_without_sip_or_from_a_foreign_origin_is_refused() -> None:
    layer = WebSocketLayer(frozenset(), 65536)
    ws, hello = _client(["chat"])
    got = layer.inbound(hello)
    ws.receive_data(got.reply)
    event = next(ws.events())
    assert isinstance(event, RejectConnection) and event.status_code == 400
    assert got.close and not layer.ready
    layer = WebSocketLayer(frozenset({"https://app.example.com"}), 65536)
    ws, hello = _client(["sip"], origin="https://evil.example.net")
    got = layer.inbound(hello)
    assert got.reply.startswith(b"HTTP/1.1 403 ") and got.close
    layer = WebSocketLayer(frozenset({"https://app.example.com"}), 65536)
    ws, hello = _client(["sip"], origin="https://app.example.com/")
    ws.receive_data(layer.inbound(hello).reply)
    assert isinstance(next(ws.events()), AcceptConnection) and layer.ready


def test_plain_http_gets_a_short_answer_and_garbage_a_400() -> None:
    got = WebSocketLayer(frozenset(), 65536).inbound(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.reply.startswith(b"HTTP/1.1 426 Upgrade Required\r\n") and got.close
    got = WebSocketLayer(frozenset(), 65536).inbound(b"\x16\x03\x01 nonsense\r\n\r\n")
    assert got.reply.startswith(b"HTTP/1.1 400 Bad Request\r\n") and got.close


def test_non_sip_and_oversized_websocket_messages_break_the_layer() -> None:
    layer = WebSocketLayer(frozenset(), 1024)
    ws = _open(layer)
    with pytest.raises(LayerError, match="not a SIP message"):
        layer.inbound(ws.send(TextMessage(data="hello")))
    layer = WebSocketLayer(frozenset(), 1024)
    ws = _open(layer)
    frame = ws.send(TextMessage(data="MESSAGE sip:x SIP/2.0\r\n" + "x" * 5000))
    with pytest.raises(LayerError, match="over 1024 bytes"):
        layer.inbound(frame[:2000])  # refused before the rest has arrived


def test_looks_like_sip_and_origins() -> None:
    assert looks_like_sip(SIP) and looks_like_sip(b"SIP/2.0 200 OK\r\n\r\n")
    assert not looks_like_sip(b"GET / HTTP/1.1\r\n") and not looks_like_sip(b"")
    assert origin_allowed(None, frozenset())
    assert not origin_allowed(None, frozenset({"null"}))
    assert origin_allowed("null", frozenset({"null"}))


def _pair(tmp_path: Path, trusted: bool = True) -> tuple[TlsLayer, TlsLayer]:
    certs = make_certs(tmp_path / "srv")
    ca = certs.ca if trusted else make_certs(tmp_path / "other").ca
    contexts = TlsContexts(TlsSettings(certs.cert, certs.key, ca), need_server=True)
    assert contexts.server is not None and contexts.client is not None
    server = TlsLayer(contexts.server, server_side=True)
    client = TlsLayer(contexts.client, server_side=False, server_hostname="127.0.0.1")
    return server, client


def test_tls_layers_shake_hands_in_memory_and_carry_the_stream(tmp_path: Path) -> None:
    server, client = _pair(tmp_path)
    early = client.outbound(SIP)  # queued until the handshake is done
    assert early == b""
    to_server = client.start()
    stream = b""
    for _ in range(4):
        got = server.inbound(to_server)
        stream += got.stream
        if not got.reply:
            break
        to_server = client.inbound(got.reply).reply
    assert server.ready and client.ready
    stream += server.inbound(to_server + client.outbound(SIP)).stream
    assert stream == SIP + SIP  # the queued message, then the new one
    assert client.inbound(server.outbound(SIP)).stream == SIP


def test_tls_layer_refuses_an_untrusted_server(tmp_path: Path) -> None:
    server, client = _pair(tmp_path, trusted=False)
    reply = server.inbound(client.start()).reply
    with pytest.raises(LayerError, match="TLS handshake failed"):
        client.inbound(reply)


def test_tls_contexts_reload_keeps_the_old_on_a_bad_file(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    contexts = TlsContexts(TlsSettings(certs.cert, certs.key, None), need_server=True)
    first = contexts.server
    assert contexts.reload() and contexts.server is not first
    certs.key.write_text("garbage")
    second = contexts.server
    assert not contexts.reload() and contexts.server is second


def test_stream_framer_counts_double_crlf_pings() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [] and framer.take_pings() == 1
    assert framer.feed(b"\r\n") == [] and framer.feed(b"\r\n") == []
    assert framer.take_pings() == 1  # a ping split over two reads
    assert framer.feed(SIP + b"\r\n\r\n\r\n\r\n") == [SIP]
    assert framer.take_pings() == 2 and framer.take_pings() == 0


def _handshake(server: TlsLayer, client: TlsLayer) -> None:
    to_server = client.start()
    for _ in range(4):
        reply = server.inbound(to_server).reply
        if not reply:
            return
        to_server = client.inbound(reply).reply


def test_mutual_tls_required_refuses_a_client_without_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "srv")
    server_ctx = TlsContexts(TlsSettings(certs.cert, certs.key, certs.ca, "required"),
                             need_server=True).server
    assert server_ctx is not None
    bare = TlsContexts(TlsSettings(None, None, certs.ca), need_server=False).client
    assert bare is not None
    with pytest.raises(LayerError, match="TLS"):
        _handshake(TlsLayer(server_ctx, server_side=True),
                   TlsLayer(bare, server_side=False, server_hostname="127.0.0.1"))
    # a client that shows a certificate from the CA gets in
    ours = TlsContexts(TlsSettings(certs.cert, certs.key, certs.ca), need_server=False).client
    assert ours is not None
    server = TlsLayer(server_ctx, server_side=True)
    client = TlsLayer(ours, server_side=False, server_hostname="127.0.0.1")
    _handshake(server, client)
    assert server.ready and client.ready

"""TLS, WS and WSS against a real server: Python clients on real sockets.

Each test starts `sipsilo serve` with udp, tls, ws and wss listeners and a
certificate made for the test, and talks SIP over them the way phones
(TLS) and web clients (WebSocket, RFC 7118, outbound-style Contacts on
`.invalid` hosts) do.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ServerProcess, free_port
from tests.integration.secure_clients import (
    Certs,
    SecureClient,
    make_certs,
    ok_for,
    register_udp,
    udp_message,
)
from tests.integration.silo_helpers import stats, wait_for

pytestmark = pytest.mark.integration

DOMAIN = "127.0.0.1"


class Secure:
    """A server with every transport, its ports and the test CA."""

    def __init__(self, server: ServerProcess, ports: dict[str, int], certs: Certs) -> None:
        self.server = server
        self.ports = ports
        self.certs = certs

    def client(self, kind: str, **kw: Any) -> SecureClient:
        return SecureClient(kind, self.ports[kind], self.certs.ca, **kw)


def secure_settings(data_dir: Path, **extra: Any) -> tuple[dict[str, Any], dict[str, int], Certs]:
    certs = make_certs(data_dir)
    ports: dict[str, int] = {}
    for kind in ("udp", "tls", "ws", "wss"):
        ports[kind] = free_port(set(ports.values()))
    settings = {
        "server.listen": [f"{kind}:127.0.0.1:{port}" for kind, port in ports.items()],
        "tls.certificate": "cert.pem", "tls.private_key": "key.pem",
        "tls.ca_list": str(certs.ca),
        **extra,
    }
    return settings, ports, certs


@pytest.fixture
def make_secure(make_server: Callable[..., ServerProcess],
                tmp_path: Path) -> Callable[..., Secure]:
    def make(**extra: Any) -> Secure:
        data_dir = tmp_path / f"secure{len(list(tmp_path.glob('secure*')))}"
        settings, ports, certs = secure_settings(data_dir, **extra)
        return Secure(make_server(data_dir=data_dir, port=ports["udp"], **settings), ports, certs)

    return make


@pytest.fixture
def secure(make_secure: Callable[..., Secure]) -> Secure:
    return make_secure()


def idle(server: ServerProcess) -> None:
    """The dump after a REGISTER is over (until then a MESSAGE queues behind it)."""
    wait_for(lambda: stats(server)["msilo:active_deliveries"] == 0)


def test_stored_over_tls_and_ws_dumped_over_wss_in_order(secure: Secure) -> None:
    tls = secure.client("tls")
    ws = secure.client("ws")
    assert tls.send_message("alice", "bob", DOMAIN, "one") == "SIP/2.0 202 Accepted"
    assert ws.send_message("carol", "bob", DOMAIN, "two") == "SIP/2.0 202 Accepted"
    assert tls.send_message("alice", "bob", DOMAIN, "three") == "SIP/2.0 202 Accepted"
    bob = secure.client("wss")
    reply = bob.register("bob", DOMAIN)
    assert reply is not None and reply.startswith("SIP/2.0 200")
    bodies = bob.receive_messages(3)
    assert [b.rsplit("] ", 1)[-1] for b in bodies] == ["one", "two", "three"]
    wait_for(lambda: not secure.server.rows())


def test_live_relay_ws_to_wss_and_responses_come_back(secure: Secure) -> None:
    bob = secure.client("wss")
    assert (bob.register("bob", DOMAIN) or "").startswith("SIP/2.0 200")
    # the (empty) dump that follows the REGISTER is over: a live MESSAGE is relayed
    idle(secure.server)
    alice = secure.client("ws")
    alice.send(alice.message("alice", "bob", DOMAIN, "hi bob"))
    got = bob.recv()
    assert got is not None and got.startswith("MESSAGE ")
    assert got.endswith("hi bob")
    via = [line for line in got.split("\r\n") if line.lower().startswith("via:")]
    assert via[0].startswith("Via: SIP/2.0/WSS "), via
    bob.send(ok_for(got))
    final = alice.recv()
    assert final is not None and final.startswith("SIP/2.0 200"), final
    assert not secure.server.rows()


def test_tls_registered_user_reached_from_udp(secure: Secure) -> None:
    bob = secure.client("tls")
    assert (bob.register("bob", DOMAIN) or "").startswith("SIP/2.0 200")
    idle(secure.server)
    result: dict[str, str | None] = {}
    sender = threading.Thread(
        target=lambda: result.setdefault("status", udp_message(secure.ports["udp"], "bob", "x")))
    sender.start()
    got = bob.recv()
    assert got is not None and got.startswith("MESSAGE sip:bob@127.0.0.1:")
    assert "Via: SIP/2.0/TLS " in got
    bob.send(ok_for(got))
    sender.join(15)
    assert result["status"] == "SIP/2.0 200 OK"


def test_closed_web_connection_stores_then_reconnect_dumps(secure: Secure) -> None:
    instance = "5f0e7d1c-0000-4000-8000-000000000001"
    page = secure.client("wss")
    assert (page.register("bob", DOMAIN, instance=instance, call_id="page1") or "").startswith(
        "SIP/2.0 200")
    page.close()  # the tab is closed: binding still registered, WebSocket gone
    time.sleep(0)  # (no wait needed: the server sees the close before the next request)
    status = udp_message(secure.ports["udp"], "bob", "while away")
    assert status == "SIP/2.0 202 Accepted"
    assert [r["body"] for r in secure.server.rows()] == [b"while away"]
    page = secure.client("wss")
    assert (page.register("bob", DOMAIN, instance=instance, call_id="page1", cseq=2)
            or "").startswith("SIP/2.0 200")
    assert [b.rsplit("] ", 1)[-1] for b in page.receive_messages(1)] == ["while away"]
    wait_for(lambda: not secure.server.rows())


def test_crlf_keepalive_ping_gets_a_pong_on_tls_and_tcp(make_server: Callable[..., Any],
                                                        tmp_path: Path) -> None:
    settings, ports, certs = secure_settings(tmp_path / "ka")
    tcp_port = free_port(set(ports.values()))
    settings["server.listen"] = [*settings["server.listen"], f"tcp:127.0.0.1:{tcp_port}"]
    make_server(data_dir=tmp_path / "ka", port=ports["udp"], **settings)
    for client in (SecureClient("tls", ports["tls"], certs.ca), SecureClient("tcp", tcp_port)):
        client.send_raw(b"\r\n\r\n")
        assert client.recv_raw() == b"\r\n"
        # the connection still carries SIP afterwards
        assert client.send_message("alice", "bob", DOMAIN, "after ping") == "SIP/2.0 202 Accepted"
        client.close()


def test_bad_input_closes_that_connection_and_the_server_goes_on(secure: Secure) -> None:
    ports = secure.ports
    # plain SIP (no TLS) on the TLS port: handshake fails, connection closed
    with socket.create_connection(("127.0.0.1", ports["tls"]), timeout=5) as raw:
        raw.sendall(b"OPTIONS sip:x SIP/2.0\r\n\r\n" + b"\x16\x03\x01\x00\x05hello" * 3)
        raw.settimeout(5)
        assert _drain(raw)
    # a TLS client that does not trust our certificate: the handshake fails on its side
    with pytest.raises(ssl.SSLError):
        SecureClient("tls", ports["tls"], None)
    # WebSocket handshake without the sip subprotocol: an HTTP error, not a hang
    no_sip = SecureClient("ws", ports["ws"], subprotocols=("chat",))
    assert no_sip.handshake_status == 400
    # plain HTTP GET without an upgrade gets a short answer
    with socket.create_connection(("127.0.0.1", ports["ws"]), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.settimeout(5)
        answer = raw.recv(4096)
        assert answer.startswith(b"HTTP/1.1 426 Upgrade Required")
    # a non-SIP WebSocket message closes that WebSocket
    junk = secure.client("wss")
    junk.send("hello, not SIP")
    assert junk.wait_closed()
    # an oversized WebSocket message closes it too, before it is all read
    big = secure.client("ws")
    big.send("MESSAGE sip:bob@x SIP/2.0\r\n" + "X" * 200_000)
    assert big.wait_closed()
    # a half message over TLS, then the client goes away
    half = secure.client("tls")
    half.send_raw(b"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nContent-Length: 100\r\n\r\nabc")
    half.close()
    # every transport still serves
    for kind in ("tls", "ws", "wss"):
        client = secure.client(kind)
        assert client.send_message("alice", "bob", DOMAIN, kind) == "SIP/2.0 202 Accepted"
        client.close()
    wait_for(lambda: "not a SIP message" in secure.server.log(), 5)
    log = secure.server.log()
    assert "TLS handshake failed" in log
    assert "without the sip subprotocol" in log
    assert "not a SIP message" in log
    assert "Traceback" not in log


def _drain(sock: socket.socket) -> bool:
    """Read until the peer closes (True) or 5 s pass (False)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if not sock.recv(4096):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def test_allowed_origins(make_secure: Callable[..., Secure]) -> None:
    secure = make_secure(**{"websocket.allowed_origins": ["https://app.example.com"]})
    good = secure.client("ws", origin="https://app.example.com")
    assert good.handshake_status == 101
    bad = secure.client("ws", origin="https://evil.example.net")
    assert bad.handshake_status == 403
    # the refusal is logged just after it is sent
    wait_for(lambda: "not in websocket.allowed_origins" in secure.server.log(), 5)


class TlsPeer:
    """A TLS SIP phone: accepts one connection, answers 200 to what it reads."""

    def __init__(self, certs: Certs) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certs.cert, certs.key)
        self.sni: list[str | None] = []
        self.ctx.sni_callback = lambda _s, name, _c: self.sni.append(name)  # type: ignore[assignment]
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(15)
        self.port = self.sock.getsockname()[1]
        self.received: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            raw, _ = self.sock.accept()
        except OSError:
            return
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        conn.settimeout(10)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            text = (head + b"\r\n\r\n" + body).decode()
            self.received.append(text)
            conn.sendall(ok_for(text).encode())
            time.sleep(0.5)
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("scheme", ["sips", "sip-transport-tls"])
def test_tls_contact_is_reached_over_a_new_verified_connection(
        secure: Secure, tmp_path: Path, scheme: str) -> None:
    peer_certs = make_certs(tmp_path / "peer", names=("localhost",))
    # the server's CA list trusts the peer's CA (and its own)
    secure.certs.ca.write_bytes(secure.certs.ca.read_bytes() + peer_certs.ca.read_bytes())
    secure.server.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: "TLS certificate and key reloaded" in secure.server.log())
    peer = TlsPeer(peer_certs)
    contact = (f"sips:bob@localhost:{peer.port}" if scheme == "sips"
               else f"sip:bob@localhost:{peer.port};transport=tls")
    register_udp(secure.ports["udp"], contact)
    idle(secure.server)
    assert udp_message(secure.ports["udp"], "bob", "over tls") == "SIP/2.0 200 OK"
    peer.thread.join(5)
    assert peer.received and peer.received[0].endswith("over tls")
    assert peer.sni == ["localhost"]
    peer.close()


def test_tls_contact_with_an_untrusted_certificate_gets_nothing(secure: Secure,
                                                                tmp_path: Path) -> None:
    stranger = make_certs(tmp_path / "stranger", names=("localhost",))  # CA not trusted
    peer = TlsPeer(stranger)
    register_udp(secure.ports["udp"], f"sip:bob@localhost:{peer.port};transport=tls")
    idle(secure.server)
    assert udp_message(secure.ports["udp"], "bob", "secret") == "SIP/2.0 202 Accepted"
    assert [r["body"] for r in secure.server.rows()] == [b"secret"]
    assert peer.received == []
    assert "TLS handshake failed" in secure.server.log()
    peer.close()


def test_sighup_rereads_the_certificate_open_connections_stay(secure: Secure,
                                                              tmp_path: Path) -> None:
    before = secure.client("tls")
    first_serial = x509_serial(before.sock)
    renewed = make_certs(tmp_path / "renewed")
    data_dir = secure.server.data_dir
    (data_dir / "cert.pem").write_bytes(renewed.cert.read_bytes())
    (data_dir / "key.pem").write_bytes(renewed.key.read_bytes())
    secure.server.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: "TLS certificate and key reloaded" in secure.server.log())
    after = SecureClient("tls", secure.ports["tls"], renewed.ca)
    assert x509_serial(after.sock) != first_serial
    # the connection opened before the reload still works
    assert before.send_message("alice", "bob", DOMAIN, "still here") == "SIP/2.0 202 Accepted"
    # a bad file on the next reload keeps the current certificate
    (data_dir / "key.pem").write_text("not a key")
    secure.server.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: "TLS certificate not reloaded" in secure.server.log())
    again = SecureClient("tls", secure.ports["tls"], renewed.ca)
    assert again.send_message("alice", "bob", DOMAIN, "x") == "SIP/2.0 202 Accepted"


def x509_serial(sock: socket.socket) -> bytes:
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_tls_listener_without_certificate_stops_startup(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(tmp_path / "nocert", port, {
        "server.listen": [f"udp:127.0.0.1:{port}", f"tls:127.0.0.1:{free_port({port})}"]})
    with pytest.raises(RuntimeError) as err:
        server.start()
    assert "sipsilo: error: tls.certificate: cannot read" in str(err.value)
    assert "Traceback" not in str(err.value)
    check = subprocess.run(
        [sys.executable, "-m", "sipsilo", "check-config", str(server.data_dir / "sipsilo.toml"),
         "--data-dir", str(server.data_dir)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 2
    assert check.stderr.strip().startswith("sipsilo: error: tls.certificate: cannot read")


def test_connection_closing_mid_relay_stores_the_message_at_once(
        make_secure: Callable[..., Secure]) -> None:
    # fr_timer far above the sender's wait: only the close itself can end the relay
    secure = make_secure(**{"tm.fr_timer": 60})
    page = secure.client("ws")
    assert (page.register("bob", DOMAIN) or "").startswith("SIP/2.0 200")
    idle(secure.server)
    result: dict[str, str | None] = {}
    sender = threading.Thread(target=lambda: result.setdefault(
        "status", udp_message(secure.ports["udp"], "bob", "in flight", timeout=8)))
    sender.start()
    got = page.recv()
    assert got is not None and got.endswith("in flight")
    page.close()  # the tab goes away without answering
    sender.join(15)
    assert result["status"] == "SIP/2.0 202 Accepted"
    assert [r["body"] for r in secure.server.rows()] == [b"in flight"]


def test_ipv6_tls_and_wss_listeners(make_server: Callable[..., ServerProcess],
                                    tmp_path: Path) -> None:
    data_dir = tmp_path / "v6"
    certs = make_certs(data_dir, names=("::1", "localhost"))
    udp = free_port()
    tls = free_port({udp})
    wss = free_port({udp, tls})
    make_server(data_dir=data_dir, port=udp, **{
        "server.listen": [f"udp:127.0.0.1:{udp}", f"tls:[::1]:{tls}", f"wss:[::1]:{wss}"],
        "tls.certificate": "cert.pem", "tls.private_key": "key.pem"})
    sender = SecureClient("tls", tls, certs.ca, host="::1")
    assert sender.send_message("alice", "bob", DOMAIN, "over v6") == "SIP/2.0 202 Accepted"
    bob = SecureClient("wss", wss, certs.ca, host="::1")
    assert (bob.register("bob", DOMAIN) or "").startswith("SIP/2.0 200")
    assert [b.rsplit("] ", 1)[-1] for b in bob.receive_messages(1)] == ["over v6"]


def test_a_stalled_handshake_is_closed_by_the_first_message_deadline(
        make_secure: Callable[..., Secure]) -> None:
    secure = make_secure(**{"server.tcp_message_timeout": 2})
    stalled = []
    for kind, first_bytes in (("tls", b"\x16\x03\x01\x02\x00\x01"),  # a ClientHello, cut
                              ("ws", b"GET / HTTP/1.1\r\nHost: x\r\n")):  # headers never end
        raw = socket.create_connection(("127.0.0.1", secure.ports[kind]), timeout=10)
        raw.sendall(first_bytes)
        stalled.append(raw)
    started = time.monotonic()
    for raw in stalled:
        raw.settimeout(10)
        assert _drain(raw), "the server kept a stalled handshake open"
        raw.close()
    assert time.monotonic() - started < 8
    # One summary line for both (tls and ws share the stream connections' deadline).
    wait_for(lambda: "closed 2 tcp connections (2 no complete message within 2 s)"
             in secure.server.log())


def test_offline_notice_reaches_a_web_sender_over_its_websocket(
        make_secure: Callable[..., Secure]) -> None:
    secure = make_secure(**{"msilo.registrar": "sip:registrar@127.0.0.1"})
    alice = secure.client("wss")
    assert (alice.register("alice", DOMAIN) or "").startswith("SIP/2.0 200")
    idle(secure.server)
    alice.send(alice.message("alice", "bob", DOMAIN, "are you there?"))
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(m.startswith("MESSAGE ") for m in seen):
        got = alice.recv(1)
        if got is not None:
            seen.append(got)
    assert any(m.startswith("SIP/2.0 202") for m in seen), seen
    notice = next(m for m in seen if m.startswith("MESSAGE "))
    assert notice.startswith("MESSAGE sip:alicex@df7jal23ls0d.invalid;transport=wss SIP/2.0")
    assert "is offline" in notice
    alice.send(ok_for(notice))

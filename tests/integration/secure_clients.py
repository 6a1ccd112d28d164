"""Test certificates and plain-Python SIP clients over TLS, WS and WSS.

The certificates are made per test (a throw-away CA and a server certificate
for 127.0.0.1/localhost); nothing here is ever a production key. The client
is a blocking socket, with TLS from ssl and WebSocket framing from wsproto,
that sends SIP text and reads one SIP message at a time.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

_seq = itertools.count(1)
DOMAIN = "127.0.0.1"


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certs(directory: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost"),
               prefix: str = "") -> Certs:
    """A CA and a server certificate signed by it, for names (IPs or DNS names)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"sipsilo test CA {uuid.uuid4().hex[:8]}")  # CAs told apart by name
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    certs = Certs(directory / f"{prefix}ca.pem", directory / f"{prefix}cert.pem",
                  directory / f"{prefix}key.pem")
    certs.ca.write_bytes(ca_cert.public_bytes(pem))
    certs.cert.write_bytes(cert.public_bytes(pem))
    certs.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return certs


class SecureClient:
    """One SIP client connection: "tls", "ws" or "wss" (or "tcp") to 127.0.0.1:port."""

    def __init__(self, kind: str, port: int, ca: Path | None = None, *,
                 origin: str | None = None, subprotocols: tuple[str, ...] = ("sip",),
                 timeout: float = 5.0, host: str = "127.0.0.1") -> None:
        self.kind = kind
        self.port = port
        raw = socket.create_connection((host, port), timeout=timeout)
        if kind in ("tls", "wss"):
            ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
            raw = ctx.wrap_socket(raw, server_hostname=host)
        self.sock = raw
        self.local = raw.getsockname()
        self._buf = b""
        self._messages: list[bytes] = []
        self.closed = False
        self.ws: WSConnection | None = None
        self.handshake_status: int | None = None
        if kind in ("ws", "wss"):
            self.ws = WSConnection(ConnectionType.CLIENT)
            extra = [("Origin", origin)] if origin else []
            authority = f"[{host}]" if ":" in host else host
            self.sock.sendall(self.ws.send(Request(host=f"{authority}:{port}", target="/",
                                                   subprotocols=list(subprotocols),
                                                   extra_headers=extra)))
            self._pump(timeout, until_handshake=True)

    @property
    def via_transport(self) -> str:
        return self.kind.upper()

    # ------------------------------------------------------------ wire
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, text: str) -> None:
        data = text.encode()
        if self.ws is not None:
            self.sock.sendall(self.ws.send(TextMessage(data=text)))
        else:
            self.sock.sendall(data)

    def _feed(self, data: bytes) -> None:
        if self.ws is None:
            self._buf += data
            while True:
                self._buf = self._buf.lstrip(b"\r\n")
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                length = 0
                for line in self._buf[:end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        length = int(value.strip())
                total = end + 4 + length
                if len(self._buf) < total:
                    return
                self._messages.append(self._buf[:total])
                self._buf = self._buf[total:]
        self.ws.receive_data(data)
        parts: list[bytes] = []
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.handshake_status = 101
            elif isinstance(event, RejectConnection):
                self.handshake_status = event.status_code
            elif isinstance(event, RejectData):
                pass
            elif isinstance(event, TextMessage | BytesMessage):
                chunk = event.data.encode() if isinstance(event.data, str) else event.data
                parts.append(chunk)
                if event.message_finished:
                    self._messages.append(b"".join(parts))
                    parts = []
            elif isinstance(event, CloseConnection):
                self.closed = True

    def _pump(self, timeout: float, until_handshake: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while not self._messages and not self.closed:
            if until_handshake and self.handshake_status is not None:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                return
            except OSError:
                self.closed = True
                return
            if not data:
                self.closed = True
                if self.ws is not None:
                    self.ws.receive_data(None)
                return
            self._feed(data)

    def recv(self, timeout: float = 5.0) -> str | None:
        """The next SIP message, or None after timeout (or when closed)."""
        if not self._messages:
            self._pump(timeout)
        return self._messages.pop(0).decode() if self._messages else None

    def recv_raw(self, timeout: float = 2.0) -> bytes:
        """Whatever bytes arrive (non-SIP answers: HTTP, pongs)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return b""

    def wait_closed(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                return True
            if not data:
                return True
        return self.closed

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # ------------------------------------------------------------ SIP
    def via(self) -> str:
        local = self.local[0] if ":" not in self.local[0] else f"[{self.local[0]}]"
        host = "df7jal23ls0d.invalid" if self.ws is not None else local
        port = "" if self.ws is not None else f":{self.local[1]}"
        return f"Via: SIP/2.0/{self.via_transport} {host}{port};branch=z9hG4bK{next(_seq)}x"

    def contact_uri(self, user: str) -> str:
        if self.ws is not None:
            return f"sip:{user}x@df7jal23ls0d.invalid;transport={self.kind}"
        local = self.local[0] if ":" not in self.local[0] else f"[{self.local[0]}]"
        return f"sip:{user}@{local}:{self.local[1]};transport={self.kind}"

    def register(self, user: str, domain: str, expires: int = 300, *,
                 instance: str | None = None, call_id: str | None = None,
                 cseq: int = 1) -> str | None:
        """REGISTER (outbound-style for WebSocket: reg-id and +sip.instance)."""
        contact = f"<{self.contact_uri(user)}>"
        if self.ws is not None:
            inst = instance or str(uuid.uuid4())
            contact += f';reg-id=1;+sip.instance="<urn:uuid:{inst}>"'
        text = (
            f"REGISTER sip:{domain} SIP/2.0\r\n{self.via()}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:{user}@{domain}>;tag=r{next(_seq)}\r\nTo: <sip:{user}@{domain}>\r\n"
            f"Call-ID: {call_id or uuid.uuid4().hex}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: {contact};expires={expires}\r\nSupported: path, outbound\r\n"
            f"Content-Length: 0\r\n\r\n"
        )
        self.send(text)
        return self.recv()

    def message(self, sender: str, user: str, domain: str, body: str) -> str:
        """A MESSAGE from sender@domain to user@domain, as text (send it yourself)."""
        data = body.encode()
        return (
            f"MESSAGE sip:{user}@{domain} SIP/2.0\r\n{self.via()}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:{sender}@{domain}>;tag=m{next(_seq)}\r\nTo: <sip:{user}@{domain}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 MESSAGE\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n\r\n{body}"
        )

    def send_message(self, sender: str, user: str, domain: str, body: str) -> str | None:
        """Send a MESSAGE and return the final response's status line."""
        self.send(self.message(sender, user, domain, body))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = self.recv(max(deadline - time.monotonic(), 0.1))
            if got is None:
                return None
            first = got.split("\r\n", 1)[0]
            if first.startswith("SIP/2.0 ") and int(first.split()[1]) >= 200:
                return first
        return None

    def receive_messages(self, count: int, timeout: float = 10.0) -> list[str]:
        """Answer 200 to incoming MESSAGEs until count arrived; their bodies, in order."""
        bodies: list[str] = []
        deadline = time.monotonic() + timeout
        while len(bodies) < count and time.monotonic() < deadline:
            got = self.recv(max(deadline - time.monotonic(), 0.1))
            if got is None:
                break
            if got.startswith("MESSAGE "):
                self.send(ok_for(got))
                bodies.append(got.split("\r\n\r\n", 1)[1])
        return bodies


def ok_for(request: str) -> str:
    """200 OK to a request: its Via, From, To (tagged), Call-ID, CSeq."""
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    keep = []
    for line in head:
        name = line.partition(":")[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            keep.append(line)
        elif name in ("to", "t"):
            keep.append(line if ";tag=" in line else line + ";tag=ok1")
    return "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"


def udp_message(port: int, user: str, body: str, timeout: float = 10.0,
                domain: str = DOMAIN) -> str | None:
    """A MESSAGE from alice over UDP; the final response's status line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        data = body.encode()
        text = (
            f"MESSAGE sip:{user}@{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};rport;branch=z9hG4bKudp{time.monotonic_ns()}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@{domain}>;tag=u1\r\n"
            f"To: <sip:{user}@{domain}>\r\n"
            f"Call-ID: udp-{time.monotonic_ns()}\r\nCSeq: 1 MESSAGE\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n\r\n{body}"
        )
        sock.sendto(text.encode(), ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.05))
            try:
                got = sock.recv(65535).decode()
            except TimeoutError:
                return None
            first = got.split("\r\n", 1)[0]
            if first.startswith("SIP/2.0 ") and int(first.split()[1]) >= 200:
                return first
    return None


def register_udp(port: int, contact: str, user: str = "bob", domain: str = DOMAIN) -> None:
    """REGISTER user with contact over UDP; expects 200."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        text = (
            f"REGISTER sip:{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};rport;branch=z9hG4bKreg{time.monotonic_ns()}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{domain}>;tag=r1\r\n"
            f"To: <sip:{user}@{domain}>\r\n"
            f"Call-ID: reg-{time.monotonic_ns()}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <{contact}>;expires=60\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(text.encode(), ("127.0.0.1", port))
        sock.settimeout(5)
        assert sock.recv(65535).startswith(b"SIP/2.0 200")


class UdpPhone:
    """A phone on UDP: answers 200 to each MESSAGE, after *delay* (a slow
    phone), keeping (Call-ID, body) in arrival order. Given *server_port*, it
    registers as *user* there first."""

    def __init__(self, server_port: int | None = None, user: str = "alice",
                 delay: float = 0.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.delay = delay
        self.got: list[tuple[str, str]] = []
        self._stop = threading.Event()
        if server_port is not None:
            register_udp(server_port, f"sip:{user}@127.0.0.1:{self.port}", user=user)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def bodies(self) -> list[str]:
        return [body for _, body in self.got]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode(errors="replace")
            if not text.startswith("MESSAGE "):
                continue
            call_id = next((line.split(":", 1)[1].strip() for line in text.split("\r\n")
                            if line.lower().startswith(("call-id:", "i:"))), "")
            self.got.append((call_id, text.split("\r\n\r\n", 1)[1]))
            if self.delay:
                time.sleep(self.delay)
            self.sock.sendto(ok_for(text).encode(), peer)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()

"""Local stand-ins for push services: an HTTP/1.1 server (webhook, Web Push, FCM and its
token endpoint) and an HTTP/2 cleartext server (APNs), both recording every request,
plus the RFC 8599 REGISTER and MESSAGE a test sends over a raw UDP socket."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.integration.sipwire import RawUA


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpRecorder:
    """An HTTP server on 127.0.0.1 that records requests and answers *status*
    (or what *replies* gives for a path)."""

    status: int = 200
    replies: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                recorder.received.append(Received(
                    "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, reply = recorder.replies.get(self.path, (recorder.status, b"{}"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def posts(self, path: str | None = None) -> list[Received]:
        return [r for r in self.received if path is None or r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class H2Recorder:
    """HTTP/2 with prior knowledge (h2c) on 127.0.0.1, as APNs speaks it over TLS:
    records each request's pseudo-headers, headers and body, answers *status*."""

    def __init__(self, status: int = 200, reply: bytes = b"") -> None:
        self.status, self.reply = status, reply
        self.received: list[Received] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        import h2.config
        import h2.connection
        import h2.events

        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2c.initiate_connection()
        conn.sendall(h2c.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        with conn:
            while True:
                data = conn.recv(65535)
                if not data:
                    return
                for event in h2c.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        hdrs = {(k.decode() if isinstance(k, bytes) else k):
                                (v.decode() if isinstance(v, bytes) else v)
                                for k, v in event.headers}
                        streams[event.stream_id] = (hdrs, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        h2c.acknowledge_received_data(event.flow_controlled_length,
                                                      event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        hdrs, body = streams.pop(event.stream_id)
                        self.received.append(Received(hdrs[":method"], hdrs[":path"], hdrs,
                                                      bytes(body)))
                        h2c.send_headers(event.stream_id, [
                            (":status", str(self.status)),
                            ("content-length", str(len(self.reply)))],
                            end_stream=not self.reply)
                        if self.reply:
                            h2c.send_data(event.stream_id, self.reply, end_stream=True)
                conn.sendall(h2c.data_to_send())

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------ JWTs


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_jwt(token: str, public_key: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a compact JWS whose signature *public_key* verifies
    (RS256 or ES256); raises InvalidSignature otherwise."""
    head, body, sig = token.split(".")
    signed = f"{head}.{body}".encode()
    header = json.loads(b64d(head))
    raw = b64d(sig)
    if isinstance(public_key, rsa.RSAPublicKey):
        assert header["alg"] == "RS256"
        public_key.verify(raw, signed, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert header["alg"] == "ES256" and len(raw) == 64
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                   int.from_bytes(raw[32:], "big"))
        public_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
    return header, json.loads(b64d(body))


# ------------------------------------------------------------------ Web Push


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def webpush_decrypt(body: bytes, ua_key: ec.EllipticCurvePrivateKey, auth: bytes) -> bytes:
    """RFC 8291 decryption written out from the RFC (single record, aes128gcm of
    RFC 8188), independent of the library the server encrypts with."""
    salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    as_public = body[21:21 + idlen]
    ciphertext = body[21 + idlen:]
    assert idlen == 65 and rs >= 18 and len(ciphertext) <= rs
    ua_public = ua_key.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)
    ecdh = ua_key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), as_public))
    ikm = _hmac(_hmac(auth, ecdh), b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    plain = padded.rstrip(b"\x00")
    assert plain.endswith(b"\x02"), "the last record ends with the 0x02 delimiter"
    return plain[:-1]


# ------------------------------------------------------------------ SIP


def register(ua: RawUA, server_port: int, user: str, contact_params: str, expires: int = 3600,
             cseq: int = 1) -> str:
    ua.send_request(f"REGISTER sip:127.0.0.1:{server_port} SIP/2.0", [
        f"From: <sip:{user}@127.0.0.1>;tag=reg{user}", f"To: <sip:{user}@127.0.0.1>",
        f"Call-ID: reg-{user}-{ua.port}@127.0.0.1", f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:{ua.port}{contact_params}>", f"Expires: {expires}"])
    return ua.final()


def send_message(ua: RawUA, server_port: int, user: str, text: str, wait: float = 5.0) -> str:
    ua.send_request(f"MESSAGE sip:{user}@127.0.0.1:{server_port} SIP/2.0", [
        f"From: <sip:alice@127.0.0.1>;tag=m{time.time_ns()}", f"To: <sip:{user}@127.0.0.1>",
        f"Call-ID: msg-{time.time_ns()}@127.0.0.1", "CSeq: 1 MESSAGE",
        "Content-Type: text/plain"], text)
    return ua.final(wait)

"""TLS contexts from the ``[tls]`` section, and the TLS layer of a stream connection.

The layer is sans-IO (``ssl.MemoryBIO``): the TCP connection hands it the
bytes it read and writes what it returns, so a TLS connection is the TCP
connection with one more layer, under the same caps and deadlines, and a
failed handshake is one log line of that connection rather than an event-loop
traceback. Certificates are read into a new context on demand
(:class:`TlsContexts.reload`, wired to SIGHUP): connections accepted after a
reload use the renewed certificate, open ones keep theirs.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from sipsilo.transport.layer import Inbound, Layer, LayerError

log = logging.getLogger(__name__)

VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_READ_CHUNK = 65536


class TlsSetupError(ValueError):
    """A [tls] key that cannot be used; ``key`` names it ("tls.certificate")."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class TlsSettings:
    """The [tls] section, paths already resolved against the data dir."""

    certificate: Path | None
    private_key: Path | None
    ca_list: Path | None = None  # None: the system store
    verify_client: str = "none"
    min_version: str = "TLSv1.2"


def _readable(key: str, path: Path | None) -> Path:
    if path is None:
        raise TlsSetupError(key, "must be set for a tls or wss listener")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise TlsSetupError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def _load_cas(ctx: ssl.SSLContext, settings: TlsSettings) -> None:
    assert settings.ca_list is not None
    _readable("tls.ca_list", settings.ca_list)
    try:
        ctx.load_verify_locations(cafile=str(settings.ca_list))
    except (ssl.SSLError, ValueError) as exc:
        raise TlsSetupError("tls.ca_list",
                            f"no usable CA certificate in {settings.ca_list}: {exc}") from None


def _load_chain(ctx: ssl.SSLContext, settings: TlsSettings) -> None:
    cert = _readable("tls.certificate", settings.certificate)
    key = _readable("tls.private_key", settings.private_key)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        # OpenSSL cannot say which of the two is wrong in every case; the
        # usual one is a key that does not match the certificate.
        raise TlsSetupError("tls.certificate",
                            f"cannot use {cert} with {key}: {exc.reason or exc}") from None


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context tls/wss listeners accept with. Raises TlsSetupError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = VERSIONS[settings.min_version]
    _load_chain(ctx, settings)
    ctx.verify_mode = VERIFY[settings.verify_client]
    if ctx.verify_mode != ssl.CERT_NONE:
        if settings.ca_list is None:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        else:
            _load_cas(ctx, settings)
    return ctx


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context for connections we open to sips:/transport=tls targets.

    The peer is always verified (certificate chain and host name); our own
    certificate is offered when one is configured, for peers that ask for
    mutual TLS.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    ctx.minimum_version = VERSIONS[settings.min_version]
    if settings.ca_list is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_cas(ctx, settings)
    if settings.certificate is not None and settings.private_key is not None:
        try:
            _load_chain(ctx, settings)
        except TlsSetupError as exc:
            log.debug("no client certificate offered: %s", exc)
    return ctx


class TlsContexts:
    """The current server and client contexts; reload() swaps in new ones."""

    def __init__(self, settings: TlsSettings, need_server: bool) -> None:
        self.settings = settings
        self.need_server = need_server
        self.server: ssl.SSLContext | None = None
        self.client: ssl.SSLContext | None = None
        self.load()

    def load(self) -> None:
        """Read certificate, key and CAs; raise TlsSetupError and keep the old ones."""
        server = server_context(self.settings) if self.need_server else None
        client = client_context(self.settings)
        self.server, self.client = server, client

    def reload(self) -> bool:
        """Re-read the files (SIGHUP): new connections get the renewed
        certificate, open ones stay up. A bad file keeps the old contexts."""
        try:
            self.load()
        except TlsSetupError as exc:
            log.error("TLS certificate not reloaded, keeping the old one: %s: %s", exc.key, exc)
            return False
        log.info("TLS certificate and key reloaded from %s", self.settings.certificate)
        return True


class TlsLayer(Layer):
    """TLS over a stream connection, optionally with a layer above (WebSocket)."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None, inner: Layer | None = None) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=server_side,
                                     server_hostname=server_hostname)
        self._inner = inner
        self._handshaken = False
        self._queued: list[bytes] = []  # written before the handshake finished

    @property
    def ready(self) -> bool:
        return self._handshaken and (self._inner is None or self._inner.ready)

    def start(self) -> bytes:
        """A client's ClientHello (nothing for a server)."""
        self._handshake()
        return self._out.read()

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise LayerError(f"TLS handshake failed: {_reason(exc)}") from None
        self._handshaken = True
        if self._inner is not None:
            # A client's WebSocket upgrade request goes inside the tunnel, first.
            opening = self._inner.start()
            if opening:
                self._ssl.write(opening)
        for data in self._queued:
            self._ssl.write(data)
        self._queued.clear()

    def inbound(self, data: bytes) -> Inbound:
        self._in.write(data)
        if not self._handshaken:
            self._handshake()
            if not self._handshaken:
                return Inbound(reply=self._out.read())
        chunks: list[bytes] = []
        closed = False
        while True:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            except ssl.SSLError as exc:
                raise LayerError(f"TLS error: {_reason(exc)}") from None
            if not chunk:
                break
            chunks.append(chunk)
        plain = b"".join(chunks)
        got = Inbound(stream=plain, close=closed)
        if self._inner is not None:
            upper = self._inner.inbound(plain) if plain else Inbound()
            if upper.reply:
                self._ssl.write(upper.reply)
            got = Inbound(messages=upper.messages, close=closed or upper.close,
                          error=upper.error)
        got.reply = self._out.read()
        return got

    def outbound(self, message: bytes) -> bytes:
        data = self._inner.outbound(message) if self._inner is not None else message
        if not self._handshaken:
            self._queued.append(data)
            return b""
        self._ssl.write(data)
        return self._out.read()


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
    return str(reason or exc)

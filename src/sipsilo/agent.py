"""A small SIP user agent for the command line: ``sipsilo send`` and ``sipsilo register``.

A newcomer wants to try the silo without a softphone: write to bob while he is
offline, then bring a phone of his online and see what he missed. This module is
that phone and that sender. It is the server's own stack (transactions,
retransmissions, TCP connections) on an ephemeral loopback listener, so it
behaves on the wire like any user agent and needs no code of its own for SIP.

Transports are named as in ``[server] listen``, and the client offers every one the
server can listen on: udp, tcp, tls, and WebSocket (ws, wss; RFC 7118). A stream
transport is one connection the agent opens at the start, with the same TLS and
WebSocket layers the server's own connections have; everything, requests to the
phone included, travels over it. A WebSocket phone registers a Contact on a
made-up ``.invalid`` host (RFC 7118 §5.2): it can only be reached over that
connection, never dialled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from sipsilo.flow import Target
from sipsilo.sip.digest import Credentials as DigestCredentials
from sipsilo.sip.digest import ha1, parse_challenge, request_digest
from sipsilo.sip.errors import ParseError
from sipsilo.sip.headers import Headers
from sipsilo.sip.ids import new_call_id, new_tag
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri, format_host, parse_aor
from sipsilo.stack.core import SipStack
from sipsilo.stack.handles import ServerTransaction
from sipsilo.transaction.timers import TimerConfig
from sipsilo.transport.layer import Inbound, Layer, LayerError
from sipsilo.transport.manager import ListenSpec, Transports
from sipsilo.transport.tls import TlsLayer
from sipsilo.transport.ws_client import WebSocketClientLayer

#: What ``--transport`` accepts: every transport the server listens on.
TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls", "ws", "wss")
SECURE: frozenset[str] = frozenset({"tls", "wss"})
WEBSOCKET: frozenset[str] = frozenset({"ws", "wss"})


class AgentError(Exception):
    """A failure the user can act on (server unreachable, no answer, bad URI)."""


def sip_uri(text: str, what: str) -> SipUri:
    """``bob@host`` or ``sip:bob@host`` as a SIP URI with a user part."""
    try:
        uri = parse_aor(text)
    except ParseError:
        raise AgentError(f"{what}: not a SIP address {text!r} (expected user@host)") from None
    if not uri.user:
        raise AgentError(f"{what}: {text!r} has no user part (expected user@host)")
    return uri


@dataclass(frozen=True)
class Password:
    """A password for digest challenges; the user name is the AoR's user part."""

    password: str


@dataclass
class Incoming:
    """A MESSAGE the agent received (and answered 200)."""

    sender: str
    date: str | None
    content_type: str
    body: bytes


def tls_context(ca: str | None, insecure: bool) -> ssl.SSLContext:
    """The context for a tls/wss connection: the server verified (chain and name)
    against ``ca`` or the system's CAs; with ``insecure``, not verified at all."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, ValueError):  # before OSError: SSLError is one
            raise AgentError(f"--ca {ca}: no CA certificate in it "
                             "(expected PEM, -----BEGIN CERTIFICATE-----)") from None
        except OSError as exc:
            raise AgentError(f"--ca {ca}: cannot read it: "
                             f"{(exc.strerror or str(exc)).lower()}") from None
    return ctx


class _Watched(Layer):
    """A connection's layers, keeping why they gave up: the connection only logs it,
    and the user must read it (an untrusted certificate, a refused upgrade)."""

    def __init__(self, inner: Layer, failures: list[str]) -> None:
        self._inner = inner
        self._failures = failures

    @property
    def ready(self) -> bool:
        return self._inner.ready

    def start(self) -> bytes:
        return self._inner.start()

    def inbound(self, data: bytes) -> Inbound:
        try:
            got = self._inner.inbound(data)
        except LayerError as exc:
            self._failures.append(str(exc))
            raise
        if got.error:
            self._failures.append(got.error)
        return got

    def outbound(self, message: bytes) -> bytes:
        return self._inner.outbound(message)


class UserAgent:
    """One stack on a loopback listener, talking to one server."""

    def __init__(self, server: Target, timers: TimerConfig, user_agent: str | None, *,
                 tls: ssl.SSLContext | None = None, origin: str | None = None) -> None:
        if server.transport not in TRANSPORTS:
            raise AgentError(f"transport {server.transport} is not supported by this client")
        if server.transport in SECURE and tls is None:
            tls = tls_context(None, False)
        self.server = server
        self.user_agent = user_agent
        self._tls = tls
        self._origin = origin
        self._failures: list[str] = []
        # RFC 7118 §5.2: a WebSocket client's Contact host is made up; it is reached
        # over its connection only.
        self._ws_host = f"{new_tag()}.invalid" if server.transport in WEBSOCKET else None
        # The stack's warnings ("closing tls connection ...") would repeat, worse, what
        # the user is told in one line; without a handler they would go to stderr.
        if not logging.getLogger("sipsilo").hasHandlers():
            logging.getLogger("sipsilo").addHandler(logging.NullHandler())
        self.on_message: Callable[[Incoming], None] | None = None
        # Loopback toward a server on this machine (nothing else can reach the phone),
        # every address toward another one.
        family6 = ":" in server.host
        if ipaddress.ip_address(server.host).is_loopback:
            local = "::1" if family6 else "127.0.0.1"
        else:
            local = "::" if family6 else "0.0.0.0"
        # Stream transports: the connection we open carries everything both ways; the
        # listener is only our address for Via (a TCP one: we serve no TLS or upgrades).
        listen = "udp" if server.transport == "udp" else "tcp"
        self.stack = SipStack(
            lambda stack: Transports([ListenSpec(listen, local, 0)],
                                     stack.receive, stack.on_framing_error, 262144),
            timers, self._on_request)
        self.transports = self.stack.transports
        self._conn_id: int | None = None
        self._cseq = 0

    async def __aenter__(self) -> UserAgent:
        await self.transports.start()
        if self.server.reliable:
            # Connect first: "connection refused" is the one thing a user must hear
            # about at once, not as a synthetic 503 after the request.
            s = self.server
            try:
                conn = await self.transports.tcp.connect(s.host, s.port, s.transport,
                                                         self._layers())
            except (ConnectionError, OSError) as exc:
                if self._failures:
                    raise AgentError(f"no {s.transport} connection to the server at {s}: "
                                     f"{self._failures[0]}{self._hint()}") from None
                raise AgentError(f"cannot reach the server at {s}: "
                                 f"{_cause(exc)} (is it running?)") from None
            self._conn_id = conn.id
        return self

    def _layers(self) -> Callable[[], Layer] | None:
        """What a new connection to the server gets between socket and SIP."""
        s = self.server
        if s.transport == "tcp":
            return None
        name = s.server_name or s.host
        authority = f"{format_host(name)}:{s.port}"
        tls, origin, failures = self._tls, self._origin, self._failures

        def make() -> Layer:
            ws = (WebSocketClientLayer(authority, origin=origin)
                  if s.transport in WEBSOCKET else None)
            if s.transport == "ws":
                assert ws is not None
                return _Watched(ws, failures)
            assert tls is not None
            return _Watched(TlsLayer(tls, server_side=False, server_hostname=name, inner=ws),
                            failures)

        return make

    def _hint(self) -> str:
        """What to do about an untrusted certificate (not about a name mismatch:
        that one needs the name the certificate was made for)."""
        why = self._failures[0].lower()
        if "certificate" in why and "mismatch" not in why:
            return " (give the CA that signed the server's certificate with --ca FILE)"
        return ""

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()
        self.transports.close()

    @property
    def contact(self) -> str:
        _, host, port = self.transports.bound()[0]
        proto = self.server.transport
        param = "" if proto == "udp" else f";transport={proto}"
        if self._ws_host is not None:
            return f"{self._ws_host}{param}"
        return f"{format_host(host)}:{port}{param}"

    def _target(self) -> Target:
        s = self.server
        return Target(s.transport, s.host, s.port, conn_id=self._conn_id)

    async def request(
        self, method: str, uri: SipUri, from_uri: SipUri, to_uri: SipUri,
        headers: list[tuple[str, str]], body: bytes = b"",
        credentials: Password | None = None, call_id: str | None = None,
    ) -> Response:
        """Send one request (answering one digest challenge); its final response."""
        call_id = call_id or new_call_id("127.0.0.1")
        tag = new_tag()
        authorization: tuple[str, str] | None = None
        for _ in range(2):
            self._cseq += 1
            h = Headers()
            h.add("Max-Forwards", "70")
            h.add("From", f"<{from_uri}>;tag={tag}")
            h.add("To", f"<{to_uri}>")
            h.add("Call-ID", call_id)
            h.add("CSeq", f"{self._cseq} {method}")
            for name, value in headers:
                h.add(name, value)
            if authorization is not None:
                h.add(*authorization)
            if self.user_agent:
                h.add("User-Agent", self.user_agent)
            timed_out: list[bool] = []
            response = await self.stack.send_request(
                Request(method, uri, h, body), self._target(),
                on_timeout=functools.partial(timed_out.append, True))
            if timed_out:
                raise AgentError(f"no answer from the server at {self.server} within "
                                 f"{self.stack.timers.fr_timer:g} s (is it running?)")
            if response.status not in (401, 407) or credentials is None or authorization:
                return response
            authorization = _authorize(response, method, str(uri), from_uri, credentials)
            if authorization is None:
                return response
        return response

    def _on_request(self, handle: ServerTransaction) -> None:
        request = handle.request
        if request.method == "MESSAGE":
            if self.on_message is not None:
                self.on_message(Incoming(
                    sender=str(request.from_.uri), date=request.headers.get("Date"),
                    content_type=request.content_type or "text/plain", body=request.body))
            handle.reply(200, "OK")
        elif request.method in ("OPTIONS", "NOTIFY"):
            handle.reply(200, "OK")
        elif request.method != "ACK":
            handle.reply(405, "Method Not Allowed", headers=[("Allow", "MESSAGE, OPTIONS")])


def _cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, TimeoutError):
        return "no answer to the connection attempt"
    if isinstance(exc, OSError) and exc.errno:
        # asyncio words it "Connect call failed (...)"; the errno's text is the news.
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def _authorize(
    response: Response, method: str, uri: str, from_uri: SipUri, credentials: Password
) -> tuple[str, str] | None:
    """The Authorization header for the strongest challenge we can answer."""
    name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    for value in response.headers.get_all(name):
        try:
            challenge = parse_challenge(value)
        except ParseError:
            continue
        if challenge.qop and "auth" not in challenge.qop:
            continue
        qop = "auth" if challenge.qop else None
        cnonce = new_tag()
        user = from_uri.user or ""
        try:
            digest = request_digest(
                challenge.algorithm, ha1(challenge.algorithm, user, challenge.realm,
                                         credentials.password),
                challenge.nonce, method, uri, qop=qop, nc="00000001", cnonce=cnonce)
        except (ValueError, KeyError):
            continue  # an algorithm we do not compute: try the next challenge
        value = DigestCredentials(
            username=user, realm=challenge.realm, nonce=challenge.nonce, uri=uri,
            response=digest, algorithm=challenge.algorithm, qop=qop,
            nc="00000001" if qop else None, cnonce=cnonce if qop else None,
            opaque=challenge.opaque,
        ).to_header()
        return ("Authorization" if response.status == 401 else "Proxy-Authorization"), value
    return None


async def send_message(
    agent: UserAgent, from_uri: SipUri, to_uri: SipUri, body: bytes, content_type: str,
    credentials: Password | None = None,
) -> Response:
    """One MESSAGE (RFC 3428) to ``to_uri``; its final response."""
    return await agent.request(
        "MESSAGE", to_uri, from_uri, to_uri, [("Content-Type", content_type)], body,
        credentials)


async def register_and_wait(
    agent: UserAgent, aor: SipUri, expires: int, seconds: float | None,
    credentials: Password | None, report: Callable[[str], None],
) -> int:
    """Register ``aor`` at the agent's address, take MESSAGEs until ``seconds`` have
    passed (None: until SIGINT/SIGTERM), then remove the binding. Returns the
    number of messages received."""
    received = 0

    def on_message(msg: Incoming) -> None:
        nonlocal received
        received += 1
        text = msg.body.decode("utf-8", "replace").rstrip("\r\n")
        if not msg.content_type.lower().startswith("text/"):
            text = f"({msg.content_type}, {len(msg.body)} bytes)"
        report(f"message from {msg.sender}: {text}")

    agent.on_message = on_message
    contact = f"<sip:{aor.user}@{agent.contact}>"
    call_id = new_call_id("127.0.0.1")
    registrar = SipUri.parse(f"sip:{format_host(aor.host)}" +
                             (f":{aor.port}" if aor.port else ""))

    async def register(seconds_valid: int) -> Response:
        return await agent.request(
            "REGISTER", registrar, aor, aor,
            [("Contact", contact), ("Expires", str(seconds_valid))], b"", credentials, call_id)

    response = await register(expires)
    if not 200 <= response.status < 300:
        hint = ""
        if response.status in (401, 407):
            hint = (" (wrong password?)" if credentials is not None else
                    " (authentication is on: give the password with --password-stdin)")
        raise AgentError(f"registration refused: {response.status} {response.reason}{hint}")
    report(f"registered {aor} at {contact.strip('<>')} for {expires} s; "
           + ("waiting for messages (Ctrl-C to stop)" if seconds is None
              else f"waiting {seconds:g} s for messages"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
    response = await register(0)
    report(f"unregistered {aor} ({received} message{'' if received == 1 else 's'} received)")
    return received

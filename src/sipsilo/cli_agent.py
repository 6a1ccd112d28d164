"""The options and the user agent behind ``sipsilo send`` and ``sipsilo register``:
where to talk to (``--server`` or the configured listen address), over which
transport, and how a TLS or WebSocket connection is checked (``--ca``,
``--insecure``, ``--origin``). Kept apart from :mod:`sipsilo.cli` so that the
command module holds the commands."""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import click

from sipsilo.config import Config

F = TypeVar("F", bound=Callable[..., Any])


def agent_target(config: Config, transport: str, server: str | None) -> Any:
    """Where `send` / `register` talk to: --server, else the configured listen
    address for that transport (a wildcard listen is reached on loopback)."""
    from sipsilo.config import parse_advertise
    from sipsilo.transport.flow import Target

    if server is not None:
        try:
            name, port = parse_advertise(server)
            host = numeric(name)
        except (ValueError, OSError) as exc:
            raise click.UsageError(f"--server {server}: {exc}") from None
        # TLS checks the certificate against the name given, not its address.
        return Target(transport, host, port or (5061 if transport in ("tls", "wss") else 5060),
                      server_name=name)
    for addr in config.server.listen:
        if addr.proto == transport:
            name = host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(addr.host, addr.host)
            with contextlib.suppress(OSError):  # a listen hostname: its address
                host = numeric(host)
            return Target(transport, host, addr.port, server_name=name)
    raise click.UsageError(f"no {transport} address in server.listen: "
                           f"give --server HOST:PORT")


def numeric(host: str) -> str:
    """The address of host (the stack sends to numeric addresses only); IPv4 first,
    as "localhost" usually means 127.0.0.1 to a server's listen list."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    best = min(infos, key=lambda info: info[0] != socket.AF_INET)
    return str(best[4][0])


CLIENT_GRACE = 2.0  # seconds


def make_agent(config: Config, transport: str, server: str | None, secure: dict[str, Any]) -> Any:
    from sipsilo.agent import SECURE, WEBSOCKET, AgentError, UserAgent, tls_context
    from sipsilo.transaction.timers import TimerConfig

    ca, insecure, origin = secure["ca"], secure["insecure"], secure["origin"]
    if ca is not None and insecure:
        raise click.UsageError("--ca and --insecure exclude each other")
    if transport not in SECURE and (ca is not None or insecure):
        raise click.UsageError(f"--{'ca' if ca else 'insecure'} is for -t tls or wss")
    if transport not in WEBSOCKET and origin is not None:
        raise click.UsageError("--origin is for -t ws or wss")
    tls = None
    if transport in SECURE:
        if insecure:
            click.echo("sipsilo: warning: --insecure: the server's certificate is not "
                       "verified; anyone on the path can read and change this traffic",
                       err=True)
        try:
            tls = tls_context(ca, insecure)
        except AgentError as exc:
            raise click.UsageError(str(exc)) from None
    # A little longer than the server's own fr_timer: a MESSAGE it relays to a phone
    # that does not answer is answered (202, stored) only when that timer fires.
    timers = TimerConfig(fr_timer=config.tm.fr_timer + CLIENT_GRACE,
                         fr_inv_timer=config.tm.fr_inv_timer, wt_timer=config.tm.wt_timer)
    return UserAgent(agent_target(config, transport, server), timers,
                     config.server.user_agent or None, tls=tls, origin=origin)


def _secure_options(func: F) -> F:
    """--ca / --insecure (tls, wss) and --origin (ws, wss), passed on as ``secure``."""

    @functools.wraps(func)
    def wrapper(*args: Any, ca: str | None, insecure: bool, origin: str | None,
                **kwargs: Any) -> Any:
        return func(*args, secure={"ca": ca, "insecure": insecure, "origin": origin}, **kwargs)

    wrapper = click.option(
        "--origin", metavar="URL",
        help="WebSocket: the Origin header to send (for [websocket] allowed_origins).",
    )(wrapper)
    wrapper = click.option(
        "--insecure", is_flag=True,
        help="TLS: do not verify the server's certificate (testing only; says so on stderr).",
    )(wrapper)
    return click.option(  # type: ignore[return-value]
        "--ca", metavar="FILE",
        help="TLS: verify the server's certificate against this CA (PEM) "
             "[default: the system's CAs].",
    )(wrapper)


def agent_options(func: F) -> F:
    func = _secure_options(func)
    func = click.option(
        "--password-stdin", is_flag=True,
        help="Answer a digest challenge with the password on the first line of stdin.",
    )(func)
    func = click.option(
        "--server", metavar="HOST[:PORT]",
        help="The server to talk to [default: the configured listen address].",
    )(func)
    return click.option(
        "--transport", "-t", type=click.Choice(("udp", "tcp", "tls", "ws", "wss")),
        default="udp", show_default=True,
        help="Transport to the server (ws, wss: SIP over WebSocket, RFC 7118).",
    )(func)

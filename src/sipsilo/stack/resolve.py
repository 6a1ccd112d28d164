"""Turning a SIP URI into somewhere to send a request (RFC 3263, reduced).

sipsilo serves registered users and loopback deployments, so the full NAPTR/SRV
dance is not done: a URI's host is an IP address or a name resolved with the
system resolver, the port defaults to 5060 (5061 for sips and TLS), and the
transport comes from `;transport=` (a sips: URI is TLS).
"""

from __future__ import annotations

import asyncio
import socket

from sipsilo.flow import Target
from sipsilo.sip.uri import SipUri, is_ip_address


class ResolveError(Exception):
    pass


async def resolve_uri(uri: SipUri) -> Target:
    transport = (uri.param("transport") or "udp").lower()
    if uri.scheme == "sips":
        transport = "tls"
    if transport not in ("udp", "tcp", "tls"):
        # ws/wss: a web client is reached only over the WebSocket it opened.
        raise ResolveError(f"transport {transport} is not supported")
    name = uri.param("maddr") or uri.host
    host = name
    port = uri.port or (5061 if transport == "tls" else 5060)
    if not is_ip_address(host):
        if host.rstrip(".").lower().endswith(".invalid"):
            # RFC 6761 §6.4: never resolves (a web client's made-up Contact host).
            raise ResolveError(f"cannot resolve {host}: a .invalid name")
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
            )
        except (OSError, ValueError) as exc:
            # ValueError: a name the IDNA codec refuses (an empty label, one
            # over 63 characters) or one with a NUL never reaches the resolver.
            raise ResolveError(f"cannot resolve {host}: {exc}") from exc
        if not infos:
            raise ResolveError(f"cannot resolve {host}")
        host = str(infos[0][4][0])
    return Target(transport, host, port, server_name=name if transport == "tls" else None)

"""Limits every stream connection is held to: TCP today, TLS and WebSocket on top of it.

A stream connection costs the server a socket, a slot and a buffer for as
long as the peer keeps it open, and the peer decides how long that is. These
limits keep one peer from holding what others need:

* ``max_connections``: open connections at once; ``max_connections_per_ip``:
  of those, how many one source may hold (connections a client registered
  over count against neither, so idle strangers cannot lock out phones);
* ``message_timeout``: a message must be complete this long after it began
  (the first one: after the accept), however many bytes trickle in meanwhile
  (a slowloris peer sends one byte a second to look alive);
* ``max_header_size``: a header block is refused once it grows past this,
  before the rest of it is buffered;
* ``idle_timeout``: a connection silent this long is closed, unless pinned.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamLimits:
    max_connections: int = 2048
    max_connections_per_ip: int = 32  # 0: no per-source cap
    idle_timeout: float = 3600.0  # 0: never idle-closed
    message_timeout: float = 10.0
    max_header_size: int = 16384

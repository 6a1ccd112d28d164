"""What sits between a stream connection's socket and SIP: TLS, WebSocket.

A layer is sans-IO: the connection feeds it the bytes it read and gets back
what to hand up (a byte stream still to be cut into SIP messages, or whole
messages when the layer frames them itself, as WebSocket does), what to write
back (handshakes, pongs), and whether to close. Sending goes the other way
through ``outbound``. So every stream transport is the one TCP connection
code with zero, one or two layers, and the connection caps and deadlines
apply to all of them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class LayerError(Exception):
    """The peer broke the layer's protocol: close the connection, log the reason."""


@dataclass
class Inbound:
    stream: bytes = b""  # bytes for the SIP stream framer
    messages: list[bytes] = field(default_factory=list)  # whole SIP messages
    reply: bytes = b""  # to write back to the peer now
    close: bool = False  # close once reply is written
    error: str | None = None  # why it closes (logged)


class Layer:
    """Base of the layers: a pass-through, ready at once."""

    @property
    def ready(self) -> bool:
        """The handshakes are done: SIP can flow."""
        return True

    def start(self) -> bytes:
        """What to send as soon as the connection is up (a TLS ClientHello)."""
        return b""

    def inbound(self, data: bytes) -> Inbound:
        return Inbound(stream=data)

    def outbound(self, message: bytes) -> bytes:
        return message

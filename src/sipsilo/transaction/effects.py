"""What a transaction asks its driver to do.

Transactions never act on the world; they return these values and the asyncio
glue (``sipsilo.stack``) carries them out, in list order.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipsilo.sip.message import Request, Response


@dataclass(frozen=True)
class Send:
    """Hand ``message`` to the transport, to the transaction's destination/flow."""

    message: Request | Response


@dataclass(frozen=True)
class StartTimer:
    """Arm timer ``name`` to fire ``delay`` seconds from now.

    Re-arming a running timer of the same name replaces it (the driver keeps at
    most one timer per name per transaction).
    """

    name: str
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    """Disarm timer ``name``. Only emitted for timers the transaction armed."""

    name: str


@dataclass(frozen=True)
class PassToTU:
    """Deliver ``message`` up to the transaction user (core, proxy, silo)."""

    message: Request | Response


@dataclass(frozen=True)
class Timeout:
    """The transaction gave up waiting.

    Client: no final response in time, the TU acts as on a 408.
    INVITE server: the ACK for a 3xx-6xx never came (timer H).
    """


@dataclass(frozen=True)
class TransportFailed:
    """The transport reported a failure; the TU acts as on a 503 (§8.1.3.1)."""


@dataclass(frozen=True)
class Terminated:
    """The transaction is over: drop it from the transaction table.

    Always the last effect of the list that carries it. Every running timer has
    already been cancelled by explicit CancelTimer effects just before it.
    """


Effect = Send | StartTimer | CancelTimer | PassToTU | Timeout | TransportFailed | Terminated

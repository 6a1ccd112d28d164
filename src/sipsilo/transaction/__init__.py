"""RFC 3261 §17 transactions as pure state machines (see client.py for the design)."""

from sipsilo.transaction.ack import build_ack
from sipsilo.transaction.client import InviteClientTransaction, NonInviteClientTransaction
from sipsilo.transaction.effects import (
    CancelTimer,
    Effect,
    PassToTU,
    Send,
    StartTimer,
    Terminated,
    Timeout,
    TransportFailed,
)
from sipsilo.transaction.keys import cancel_target_key, client_key, request_client_key, server_key
from sipsilo.transaction.server import InviteServerTransaction, NonInviteServerTransaction
from sipsilo.transaction.timers import DEFAULT_TIMERS, TimerConfig

__all__ = [
    "DEFAULT_TIMERS",
    "CancelTimer",
    "Effect",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "PassToTU",
    "Send",
    "StartTimer",
    "Terminated",
    "Timeout",
    "TimerConfig",
    "TransportFailed",
    "build_ack",
    "cancel_target_key",
    "client_key",
    "request_client_key",
    "server_key",
]

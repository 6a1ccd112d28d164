"""RFC 3261 §17 transactions as pure state machines.

Why pure: a transaction is a handful of states driven by four kinds of input
(its start, a message, a timer, a transport error). Written as ``(state,
event) -> (effects, next state)``, with the transitions kept in per-class
tables (see table.py), it can be tested exhaustively with a fake clock, without
sockets or an event loop, and the asyncio glue stays a dumb interpreter. Time
exists only as timer names: no machine reads a clock.

How the glue (``sipsilo.stack``) drives one:

* client: create it, file it under ``request_client_key(request)``, apply
  ``start()``; feed each response whose ``client_key`` matches to
  ``on_response``;
* server: file it under ``server_key(request)``, apply ``start()``; feed
  matching requests (retransmissions, the ACK of a 3xx-6xx) to ``on_request``
  and the TU's answers to ``on_tu_response``;
* both: feed fired timers to ``on_timer(name)`` and send failures to
  ``on_transport_error()``; apply the returned effects in list order: Send
  through the transport, StartTimer/CancelTimer on the loop (one timer per
  name, starting replaces), PassToTU/Timeout/TransportFailed up to the TU, and
  on Terminated (always last, after explicit CancelTimers of every running
  timer) drop the transaction from the table.

Events a state does not expect are ignored and return no effects.
"""

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

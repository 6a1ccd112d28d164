"""Drive a fresh transaction of each kind into a named state (UDP, default timers)."""

from __future__ import annotations

from sipsilo.transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    TimerConfig,
)

from .messages import ack, request, response

NICT, ICT = NonInviteClientTransaction, InviteClientTransaction
NIST, IST = NonInviteServerTransaction, InviteServerTransaction


def nict(state: str) -> NonInviteClientTransaction:
    tx = NonInviteClientTransaction(request(), False, TimerConfig())
    tx.start()
    if state in ("proceeding", "completed"):
        tx.on_response(response(tx.request, 100))
    if state == "completed":
        tx.on_response(response(tx.request, 200))
    assert tx.state == state
    return tx


def ict(state: str, timed_out: bool = False) -> InviteClientTransaction:
    tx = InviteClientTransaction(request("INVITE"), False, TimerConfig())
    tx.start()
    if state != "calling":
        tx.on_response(response(tx.request, 180))
    if timed_out:
        tx.on_timer("C")
    if state == "completed":
        tx.on_response(response(tx.request, 486))
    if state == "accepted":
        tx.on_response(response(tx.request, 200))
    assert tx.state == state
    return tx


def nist(state: str) -> NonInviteServerTransaction:
    tx = NonInviteServerTransaction(request(), False, TimerConfig())
    tx.start()
    if state == "proceeding":
        tx.on_tu_response(response(tx.request, 100))
    if state == "completed":
        tx.on_tu_response(response(tx.request, 200))
    assert tx.state == state
    return tx


def ist(state: str) -> InviteServerTransaction:
    tx = InviteServerTransaction(request("INVITE"), False, TimerConfig())
    tx.start()
    if state in ("completed", "confirmed"):
        tx.on_tu_response(response(tx.request, 486))
    if state == "confirmed":
        tx.on_request(ack(tx.request))
    if state == "accepted":
        tx.on_tu_response(response(tx.request, 200))
    assert tx.state == state
    return tx

"""Server transactions (RFC 3261 §17.2, with RFC 6026's Accepted state).

See the package docstring for the design and how the glue drives a machine,
and table.py for how the tables are read. CANCEL is a non-INVITE server
transaction of its own; the glue finds the INVITE transaction it targets with
``keys.cancel_target_key`` and the TU answers that INVITE with 487 through
``on_tu_response``.
"""

from __future__ import annotations

from typing import ClassVar

from sipsilo.sip.message import Request, Response
from sipsilo.transaction.effects import Effect, PassToTU, Send
from sipsilo.transaction.table import (
    ACCEPTED,
    COMPLETED,
    CONFIRMED,
    FINAL_ERROR,
    PROCEEDING,
    PROVISIONAL,
    SUCCESS,
    TERMINATED,
    TRYING,
    Entries,
    Event,
    Rows,
    ServerBase,
    Timer,
    go,
    non_invite_answers,
    nothing,
    timeout,
)
from sipsilo.transaction.timers import DEFAULT_TIMERS, TimerConfig

# Request event kinds (kept under their old names).
RETRANSMISSION = Event.REQUEST
ACK = Event.ACK


class NonInviteServerTransaction(ServerBase):
    """§17.2.2: Trying -> Proceeding -> Completed -> Terminated; timer J."""

    def __init__(
        self, request: Request, reliable: bool, timers: TimerConfig = DEFAULT_TIMERS
    ) -> None:
        super().__init__(request, reliable, timers, TRYING)

    # -- actions ----------------------------------------------------------

    def _resend(self, request: Request) -> list[Effect]:
        assert self.last_response is not None  # Proceeding/Completed have one
        return [Send(self.last_response)]

    def _send(self, response: Response) -> list[Effect]:
        self.last_response = response
        return [Send(response)]

    def _enter_completed(self) -> list[Effect]:
        return [self._start(Timer.J, self.timers.t1x64)]  # absorbs retransmitted requests

    _REQUESTS: ClassVar[Rows[NonInviteServerTransaction, Request]] = {
        (TRYING, RETRANSMISSION): go(nothing, TRYING),  # the TU has it, no answer yet
        (PROCEEDING, RETRANSMISSION): go(_resend, PROCEEDING),
        (COMPLETED, RETRANSMISSION): go(_resend, COMPLETED),
    }
    _TU: ClassVar[Rows[NonInviteServerTransaction, Response]] = non_invite_answers(_send, _send)
    _TIMERS: ClassVar[Rows[NonInviteServerTransaction, str]] = {
        (COMPLETED, Timer.J): go(nothing, TERMINATED),
    }
    _ENTER: ClassVar[Entries[NonInviteServerTransaction]] = {COMPLETED: _enter_completed}


class InviteServerTransaction(ServerBase):
    """§17.2.1 + RFC 6026: Proceeding -> Completed -> Confirmed | Accepted -> Terminated.

    Timers G, H, I and L. A 2xx moves to Accepted for 64*T1 (timer L): INVITE
    retransmissions are absorbed there (so they do not become new
    transactions), further 2xx from the TU are sent, and an ACK that matches
    is passed up. Retransmitting a 2xx is the TU's business (for a proxy: the
    downstream UAS's, each copy relayed through here while Accepted).
    """

    def __init__(
        self,
        request: Request,
        reliable: bool,
        timers: TimerConfig = DEFAULT_TIMERS,
        *,
        send_trying: bool = True,
    ) -> None:
        super().__init__(request, reliable, timers, PROCEEDING)
        self.send_trying = send_trying
        self._interval = timers.t1  # current timer G interval

    def start(self) -> list[Effect]:
        effects: list[Effect] = []
        if self.send_trying:
            # A proxy answers 100 at once (§16.2) so the UAC stops retransmitting.
            self.last_response = self.request.make_response(100)
            effects.append(Send(self.last_response))
        return [*effects, *super().start()]

    # -- actions ----------------------------------------------------------

    def _resend(self, request: Request) -> list[Effect]:
        # Proceeding before any provisional (send_trying=False): nothing to resend.
        return [] if self.last_response is None else [Send(self.last_response)]

    def _confirm(self, request: Request) -> list[Effect]:
        return self._cancel(Timer.G, Timer.H)

    def _ack_2xx(self, request: Request) -> list[Effect]:
        return [PassToTU(request)]

    def _send(self, response: Response) -> list[Effect]:
        self.last_response = response
        return [Send(response)]

    def _more_success(self, response: Response) -> list[Effect]:
        return [Send(response)]

    def _retransmit(self, name: str) -> list[Effect]:
        assert self.last_response is not None
        self._interval = self.timers.backoff(self._interval)
        return [Send(self.last_response), self._start(Timer.G, self._interval)]

    def _enter_completed(self) -> list[Effect]:
        # Retransmit the 3xx-6xx until its ACK (G, UDP only), give up at H.
        effects: list[Effect] = []
        if not self.reliable:
            effects.append(self._start(Timer.G, self._interval))
        return [*effects, self._start(Timer.H, self.timers.t1x64)]

    def _enter_confirmed(self) -> list[Effect]:
        return [self._start(Timer.I, self.timers.t4)]  # absorbs retransmitted ACKs

    def _enter_accepted(self) -> list[Effect]:
        return [self._start(Timer.L, self.timers.t1x64)]

    _REQUESTS: ClassVar[Rows[InviteServerTransaction, Request]] = {
        (PROCEEDING, RETRANSMISSION): go(_resend, PROCEEDING),
        (COMPLETED, RETRANSMISSION): go(_resend, COMPLETED),
        (COMPLETED, ACK): go(_confirm, CONFIRMED, reliable=TERMINATED),
        (CONFIRMED, RETRANSMISSION): go(nothing, CONFIRMED),
        (CONFIRMED, ACK): go(nothing, CONFIRMED),
        (ACCEPTED, RETRANSMISSION): go(nothing, ACCEPTED),
        (ACCEPTED, ACK): go(_ack_2xx, ACCEPTED),
    }
    _TU: ClassVar[Rows[InviteServerTransaction, Response]] = {
        (PROCEEDING, PROVISIONAL): go(_send, PROCEEDING),
        (PROCEEDING, SUCCESS): go(_send, ACCEPTED),
        (PROCEEDING, FINAL_ERROR): go(_send, COMPLETED),
        (ACCEPTED, SUCCESS): go(_more_success, ACCEPTED),
    }
    _TIMERS: ClassVar[Rows[InviteServerTransaction, str]] = {
        (COMPLETED, Timer.G): go(_retransmit, COMPLETED),
        (COMPLETED, Timer.H): go(timeout, TERMINATED),
        (CONFIRMED, Timer.I): go(nothing, TERMINATED),
        (ACCEPTED, Timer.L): go(nothing, TERMINATED),
    }
    _ENTER: ClassVar[Entries[InviteServerTransaction]] = {
        COMPLETED: _enter_completed,
        CONFIRMED: _enter_confirmed,
        ACCEPTED: _enter_accepted,
    }

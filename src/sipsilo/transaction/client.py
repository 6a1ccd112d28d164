"""Client transactions (RFC 3261 §17.1, with RFC 6026's Accepted state).

See the package docstring for the design and how the glue drives a machine,
and table.py for how the tables are read: every ``(state, event)`` maps to an
action and the state it leads to.
"""

from __future__ import annotations

from typing import ClassVar

from sipsilo.sip.message import Request, Response
from sipsilo.transaction.ack import build_ack
from sipsilo.transaction.effects import Effect, PassToTU, Send, Timeout
from sipsilo.transaction.table import (
    ACCEPTED,
    CALLING,
    COMPLETED,
    FINAL_ERROR,
    PROCEEDING,
    PROVISIONAL,
    SUCCESS,
    TERMINATED,
    TRYING,
    ClientBase,
    Entries,
    Rows,
    Timer,
    go,
    non_invite_answers,
    nothing,
    timeout,
)
from sipsilo.transaction.timers import DEFAULT_TIMERS, TimerConfig


class NonInviteClientTransaction(ClientBase):
    """§17.1.2: Trying -> Proceeding -> Completed -> Terminated; timers E, F, K."""

    _RETRANSMIT = Timer.E
    _GUARD = Timer.F

    def __init__(
        self, request: Request, reliable: bool, timers: TimerConfig = DEFAULT_TIMERS
    ) -> None:
        super().__init__(request, reliable, timers, TRYING)

    # -- actions ----------------------------------------------------------

    def _pass_up(self, response: Response) -> list[Effect]:
        return [PassToTU(response)]

    def _final(self, response: Response) -> list[Effect]:
        return [PassToTU(response), *self._cancel(Timer.E, Timer.F)]

    def _retransmit(self, name: str) -> list[Effect]:
        # Trying doubles the interval up to T2; Proceeding uses T2 flat.
        if self.state == TRYING:
            self._interval = self.timers.backoff(self._interval)
        else:
            self._interval = self.timers.t2
        return [Send(self.request), self._start(Timer.E, self._interval)]

    def _enter_completed(self) -> list[Effect]:
        return [self._start(Timer.K, self.timers.wt_timer)]  # absorbs retransmitted finals

    _RESPONSES: ClassVar[Rows[NonInviteClientTransaction, Response]] = {
        **non_invite_answers(_pass_up, _final),
        (COMPLETED, SUCCESS): go(nothing, COMPLETED),  # a retransmitted final
        (COMPLETED, FINAL_ERROR): go(nothing, COMPLETED),
    }
    _TIMERS: ClassVar[Rows[NonInviteClientTransaction, str]] = {
        (TRYING, Timer.E): go(_retransmit, TRYING),
        (PROCEEDING, Timer.E): go(_retransmit, PROCEEDING),
        (TRYING, Timer.F): go(timeout, TERMINATED),
        (PROCEEDING, Timer.F): go(timeout, TERMINATED),
        (COMPLETED, Timer.K): go(nothing, TERMINATED),
    }
    _ENTER: ClassVar[Entries[NonInviteClientTransaction]] = {COMPLETED: _enter_completed}


class InviteClientTransaction(ClientBase):
    """§17.1.1 + RFC 6026: Calling -> Proceeding -> Completed | Accepted -> Terminated.

    Timers A, B, D, M and C (``fr_inv_timer``, see timers.py). A 3xx-6xx is
    ACKed here. A 2xx is passed up and the transaction waits in Accepted for
    64*T1 passing up every further 2xx (retransmissions, forked answers): the
    ACK for a 2xx is the TU's business (for a proxy: the UAC's, end to end).

    Timer C (fr_inv_timer) yields Timeout but not Terminated: the TU answers
    408/CANCELs, and the transaction stays (``timed_out``) to ACK the 487 the
    CANCEL provokes. Responses still go up as PassToTU after that Timeout; a TU
    that already settled on 408 ignores them (or relays a late 2xx).
    """

    _RETRANSMIT = Timer.A
    _GUARD = Timer.B

    def __init__(
        self, request: Request, reliable: bool, timers: TimerConfig = DEFAULT_TIMERS
    ) -> None:
        super().__init__(request, reliable, timers, CALLING)
        self.ack: Request | None = None  # built on the first 3xx-6xx, re-sent as is
        self.timed_out = False  # timer C fired: TU told, waiting for the final

    # -- actions ----------------------------------------------------------

    def _provisional(self, response: Response) -> list[Effect]:
        effects: list[Effect] = [PassToTU(response)]
        if self.timed_out:
            return effects  # the guard B is running; C is spent
        return [*effects, *self._cancel(Timer.A, Timer.B),
                self._start(Timer.C, self.timers.fr_inv_timer)]

    def _success(self, response: Response) -> list[Effect]:
        return [PassToTU(response), *self._cancel(Timer.A, Timer.B, Timer.C)]

    def _failure(self, response: Response) -> list[Effect]:
        self.ack = build_ack(self.request, response)
        return [PassToTU(response), Send(self.ack), *self._cancel(Timer.A, Timer.B, Timer.C)]

    def _reack(self, response: Response) -> list[Effect]:
        assert self.ack is not None  # set on entering Completed
        return [Send(self.ack)]

    def _more_success(self, response: Response) -> list[Effect]:
        return [PassToTU(response)]

    def _retransmit(self, name: str) -> list[Effect]:
        self._interval *= 2  # timer A is not capped by T2
        return [Send(self.request), self._start(Timer.A, self._interval)]

    def _fr_inv_timeout(self, name: str) -> list[Effect]:
        # Tell the TU now (it answers 408 upstream and CANCELs), but stay to
        # ACK the 487 the CANCEL provokes; give up fr_timer later at most.
        self.timed_out = True
        return [Timeout(), self._start(Timer.B, self.timers.fr_timer)]

    def _enter_completed(self) -> list[Effect]:
        return [self._start(Timer.D, self.timers.t1x64)]  # re-ACKs retransmitted finals

    def _enter_accepted(self) -> list[Effect]:
        return [self._start(Timer.M, self.timers.t1x64)]  # passes further 2xx up

    _RESPONSES: ClassVar[Rows[InviteClientTransaction, Response]] = {
        (CALLING, PROVISIONAL): go(_provisional, PROCEEDING),
        (CALLING, SUCCESS): go(_success, ACCEPTED),
        (CALLING, FINAL_ERROR): go(_failure, COMPLETED, reliable=TERMINATED),
        (PROCEEDING, PROVISIONAL): go(_provisional, PROCEEDING),
        (PROCEEDING, SUCCESS): go(_success, ACCEPTED),
        (PROCEEDING, FINAL_ERROR): go(_failure, COMPLETED, reliable=TERMINATED),
        (COMPLETED, FINAL_ERROR): go(_reack, COMPLETED),
        (ACCEPTED, SUCCESS): go(_more_success, ACCEPTED),
    }
    _TIMERS: ClassVar[Rows[InviteClientTransaction, str]] = {
        (CALLING, Timer.A): go(_retransmit, CALLING),
        (CALLING, Timer.B): go(timeout, TERMINATED),
        (PROCEEDING, Timer.C): go(_fr_inv_timeout, PROCEEDING),
        (PROCEEDING, Timer.B): go(nothing, TERMINATED),  # only armed after C fired (the guard)
        (COMPLETED, Timer.D): go(nothing, TERMINATED),
        (ACCEPTED, Timer.M): go(nothing, TERMINATED),
    }
    _ENTER: ClassVar[Entries[InviteClientTransaction]] = {
        COMPLETED: _enter_completed,
        ACCEPTED: _enter_accepted,
    }

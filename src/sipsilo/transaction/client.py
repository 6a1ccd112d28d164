"""Client transactions (RFC 3261 §17.1, with RFC 6026's Accepted state).

See the package docstring for the design and how the glue drives a machine.
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
    TRYING,
    Handler,
    TransactionBase,
    dispatch,
    response_class,
)
from sipsilo.transaction.timers import DEFAULT_TIMERS, TimerConfig


class NonInviteClientTransaction(TransactionBase):
    """§17.1.2: Trying -> Proceeding -> Completed -> Terminated; timers E, F, K."""

    def __init__(
        self, request: Request, reliable: bool, timers: TimerConfig = DEFAULT_TIMERS
    ) -> None:
        super().__init__(reliable, timers)
        self.request = request
        self.state = TRYING
        self._interval = timers.t1  # current timer E interval

    def start(self) -> list[Effect]:
        effects: list[Effect] = [Send(self.request)]
        if not self.reliable:
            effects.append(self._start("E", self._interval))
        effects.append(self._start("F", self.timers.fr_timer))
        return effects

    def on_response(self, response: Response) -> list[Effect]:
        return dispatch(self._RESPONSES, self, response_class(response.status), response)

    def on_timer(self, name: str) -> list[Effect]:
        if not self._fired(name):
            return []
        return dispatch(self._TIMERS, self, name, name)

    # -- handlers ---------------------------------------------------------

    def _provisional(self, response: Response) -> list[Effect]:
        self.state = PROCEEDING
        return [PassToTU(response)]

    def _final(self, response: Response) -> list[Effect]:
        effects: list[Effect] = [PassToTU(response), *self._cancel("E", "F")]
        if self.reliable:
            return effects + self._terminate()
        self.state = COMPLETED
        return [*effects, self._start("K", self.timers.wt_timer)]

    def _absorb(self, response: Response) -> list[Effect]:
        return []  # retransmitted final: nothing to do in Completed

    def _retransmit(self, name: str) -> list[Effect]:
        # Trying doubles the interval up to T2; Proceeding uses T2 flat.
        if self.state == TRYING:
            self._interval = self.timers.backoff(self._interval)
        else:
            self._interval = self.timers.t2
        return [Send(self.request), self._start("E", self._interval)]

    _RESPONSES: ClassVar[dict[tuple[str, str], Handler[NonInviteClientTransaction, Response]]] = {
        (TRYING, PROVISIONAL): _provisional,
        (TRYING, SUCCESS): _final,
        (TRYING, FINAL_ERROR): _final,
        (PROCEEDING, PROVISIONAL): _provisional,
        (PROCEEDING, SUCCESS): _final,
        (PROCEEDING, FINAL_ERROR): _final,
        (COMPLETED, SUCCESS): _absorb,
        (COMPLETED, FINAL_ERROR): _absorb,
    }
    _TIMERS: ClassVar[dict[tuple[str, str], Handler[NonInviteClientTransaction, str]]] = {
        (TRYING, "E"): _retransmit,
        (PROCEEDING, "E"): _retransmit,
        (TRYING, "F"): TransactionBase._timeout,
        (PROCEEDING, "F"): TransactionBase._timeout,
        (COMPLETED, "K"): TransactionBase._end,
    }


class InviteClientTransaction(TransactionBase):
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

    def __init__(
        self, request: Request, reliable: bool, timers: TimerConfig = DEFAULT_TIMERS
    ) -> None:
        super().__init__(reliable, timers)
        self.request = request
        self.state = CALLING
        self._interval = timers.t1  # current timer A interval
        self.ack: Request | None = None  # built on the first 3xx-6xx, re-sent as is
        self.timed_out = False  # timer C fired: TU told, waiting for the final

    def start(self) -> list[Effect]:
        effects: list[Effect] = [Send(self.request)]
        if not self.reliable:
            effects.append(self._start("A", self._interval))
        effects.append(self._start("B", self.timers.fr_timer))
        return effects

    def on_response(self, response: Response) -> list[Effect]:
        return dispatch(self._RESPONSES, self, response_class(response.status), response)

    def on_timer(self, name: str) -> list[Effect]:
        if not self._fired(name):
            return []
        return dispatch(self._TIMERS, self, name, name)

    # -- handlers ---------------------------------------------------------

    def _provisional(self, response: Response) -> list[Effect]:
        self.state = PROCEEDING
        effects: list[Effect] = [PassToTU(response)]
        if self.timed_out:
            return effects  # the guard B is running; C is spent
        return [*effects, *self._cancel("A", "B"), self._start("C", self.timers.fr_inv_timer)]

    def _success(self, response: Response) -> list[Effect]:
        self.state = ACCEPTED
        effects: list[Effect] = [PassToTU(response), *self._cancel("A", "B", "C")]
        return [*effects, self._start("M", self.timers.t1x64)]

    def _failure(self, response: Response) -> list[Effect]:
        self.ack = build_ack(self.request, response)
        effects: list[Effect] = [PassToTU(response), Send(self.ack)]
        effects += self._cancel("A", "B", "C")
        if self.reliable:
            return effects + self._terminate()
        self.state = COMPLETED
        return [*effects, self._start("D", self.timers.t1x64)]

    def _reack(self, response: Response) -> list[Effect]:
        assert self.ack is not None  # set on entering Completed
        return [Send(self.ack)]

    def _more_success(self, response: Response) -> list[Effect]:
        return [PassToTU(response)]

    def _retransmit(self, name: str) -> list[Effect]:
        self._interval *= 2  # timer A is not capped by T2
        return [Send(self.request), self._start("A", self._interval)]

    def _fr_inv_timeout(self, name: str) -> list[Effect]:
        # Tell the TU now (it answers 408 upstream and CANCELs), but stay to
        # ACK the 487 the CANCEL provokes; give up fr_timer later at most.
        self.timed_out = True
        return [Timeout(), self._start("B", self.timers.fr_timer)]

    _RESPONSES: ClassVar[dict[tuple[str, str], Handler[InviteClientTransaction, Response]]] = {
        (CALLING, PROVISIONAL): _provisional,
        (CALLING, SUCCESS): _success,
        (CALLING, FINAL_ERROR): _failure,
        (PROCEEDING, PROVISIONAL): _provisional,
        (PROCEEDING, SUCCESS): _success,
        (PROCEEDING, FINAL_ERROR): _failure,
        (COMPLETED, FINAL_ERROR): _reack,
        (ACCEPTED, SUCCESS): _more_success,
    }
    _TIMERS: ClassVar[dict[tuple[str, str], Handler[InviteClientTransaction, str]]] = {
        (CALLING, "A"): _retransmit,
        (CALLING, "B"): TransactionBase._timeout,
        (PROCEEDING, "C"): _fr_inv_timeout,
        (PROCEEDING, "B"): TransactionBase._end,  # only armed after C fired (the guard)
        (COMPLETED, "D"): TransactionBase._end,
        (ACCEPTED, "M"): TransactionBase._end,
    }

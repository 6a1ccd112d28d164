"""Server transactions (RFC 3261 §17.2, with RFC 6026's Accepted state).

See the package docstring for the design and how the glue drives a machine.
CANCEL is a non-INVITE server transaction of its own; the glue finds the INVITE
transaction it targets with ``keys.cancel_target_key`` and the TU answers that
INVITE with 487 through ``on_tu_response``.
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
    TRYING,
    Handler,
    TransactionBase,
    dispatch,
    response_class,
)
from sipsilo.transaction.timers import DEFAULT_TIMERS, TimerConfig

# Request event kinds.
RETRANSMISSION = "request"
ACK = "ack"


def _request_kind(request: Request) -> str:
    return ACK if request.method == "ACK" else RETRANSMISSION


class NonInviteServerTransaction(TransactionBase):
    """§17.2.2: Trying -> Proceeding -> Completed -> Terminated; timer J."""

    def __init__(
        self, request: Request, reliable: bool, timers: TimerConfig = DEFAULT_TIMERS
    ) -> None:
        super().__init__(reliable, timers)
        self.request = request
        self.state = TRYING
        self.last_response: Response | None = None

    def start(self) -> list[Effect]:
        return [PassToTU(self.request)]

    def on_request(self, request: Request) -> list[Effect]:
        return dispatch(self._REQUESTS, self, _request_kind(request), request)

    def on_tu_response(self, response: Response) -> list[Effect]:
        return dispatch(self._TU, self, response_class(response.status), response)

    def on_timer(self, name: str) -> list[Effect]:
        if not self._fired(name):
            return []
        return dispatch(self._TIMERS, self, name, name)

    # -- handlers ---------------------------------------------------------

    def _absorb(self, request: Request) -> list[Effect]:
        return []  # Trying: the TU has it and has not answered yet

    def _resend(self, request: Request) -> list[Effect]:
        assert self.last_response is not None  # Proceeding/Completed have one
        return [Send(self.last_response)]

    def _provisional(self, response: Response) -> list[Effect]:
        self.state = PROCEEDING
        self.last_response = response
        return [Send(response)]

    def _final(self, response: Response) -> list[Effect]:
        self.last_response = response
        if self.reliable:
            return [Send(response), *self._terminate()]
        self.state = COMPLETED
        return [Send(response), self._start("J", self.timers.t1x64)]

    _REQUESTS: ClassVar[dict[tuple[str, str], Handler[NonInviteServerTransaction, Request]]] = {
        (TRYING, RETRANSMISSION): _absorb,
        (PROCEEDING, RETRANSMISSION): _resend,
        (COMPLETED, RETRANSMISSION): _resend,
    }
    _TU: ClassVar[dict[tuple[str, str], Handler[NonInviteServerTransaction, Response]]] = {
        (TRYING, PROVISIONAL): _provisional,
        (TRYING, SUCCESS): _final,
        (TRYING, FINAL_ERROR): _final,
        (PROCEEDING, PROVISIONAL): _provisional,
        (PROCEEDING, SUCCESS): _final,
        (PROCEEDING, FINAL_ERROR): _final,
    }
    _TIMERS: ClassVar[dict[tuple[str, str], Handler[NonInviteServerTransaction, str]]] = {
        (COMPLETED, "J"): TransactionBase._end,
    }


class InviteServerTransaction(TransactionBase):
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
        super().__init__(reliable, timers)
        self.request = request
        self.state = PROCEEDING
        self.send_trying = send_trying
        self.last_response: Response | None = None
        self._interval = timers.t1  # current timer G interval

    def start(self) -> list[Effect]:
        effects: list[Effect] = []
        if self.send_trying:
            # A proxy answers 100 at once (§16.2) so the UAC stops retransmitting.
            self.last_response = self.request.make_response(100)
            effects.append(Send(self.last_response))
        return [*effects, PassToTU(self.request)]

    def on_request(self, request: Request) -> list[Effect]:
        return dispatch(self._REQUESTS, self, _request_kind(request), request)

    def on_tu_response(self, response: Response) -> list[Effect]:
        return dispatch(self._TU, self, response_class(response.status), response)

    def on_timer(self, name: str) -> list[Effect]:
        if not self._fired(name):
            return []
        return dispatch(self._TIMERS, self, name, name)

    # -- handlers ---------------------------------------------------------

    def _resend(self, request: Request) -> list[Effect]:
        # Proceeding before any provisional (send_trying=False): nothing to resend.
        return [] if self.last_response is None else [Send(self.last_response)]

    def _absorb(self, request: Request) -> list[Effect]:
        return []

    def _confirm(self, request: Request) -> list[Effect]:
        effects = self._cancel("G", "H")
        if self.reliable:
            return effects + self._terminate()
        self.state = CONFIRMED
        return [*effects, self._start("I", self.timers.t4)]

    def _ack_2xx(self, request: Request) -> list[Effect]:
        return [PassToTU(request)]

    def _provisional(self, response: Response) -> list[Effect]:
        self.last_response = response
        return [Send(response)]

    def _success(self, response: Response) -> list[Effect]:
        self.last_response = response
        self.state = ACCEPTED
        return [Send(response), self._start("L", self.timers.t1x64)]

    def _more_success(self, response: Response) -> list[Effect]:
        return [Send(response)]

    def _failure(self, response: Response) -> list[Effect]:
        self.last_response = response
        self.state = COMPLETED
        effects: list[Effect] = [Send(response)]
        if not self.reliable:
            effects.append(self._start("G", self._interval))
        return [*effects, self._start("H", self.timers.t1x64)]

    def _retransmit(self, name: str) -> list[Effect]:
        assert self.last_response is not None
        self._interval = self.timers.backoff(self._interval)
        return [Send(self.last_response), self._start("G", self._interval)]

    _REQUESTS: ClassVar[dict[tuple[str, str], Handler[InviteServerTransaction, Request]]] = {
        (PROCEEDING, RETRANSMISSION): _resend,
        (COMPLETED, RETRANSMISSION): _resend,
        (COMPLETED, ACK): _confirm,
        (CONFIRMED, RETRANSMISSION): _absorb,
        (CONFIRMED, ACK): _absorb,
        (ACCEPTED, RETRANSMISSION): _absorb,
        (ACCEPTED, ACK): _ack_2xx,
    }
    _TU: ClassVar[dict[tuple[str, str], Handler[InviteServerTransaction, Response]]] = {
        (PROCEEDING, PROVISIONAL): _provisional,
        (PROCEEDING, SUCCESS): _success,
        (PROCEEDING, FINAL_ERROR): _failure,
        (ACCEPTED, SUCCESS): _more_success,
    }
    _TIMERS: ClassVar[dict[tuple[str, str], Handler[InviteServerTransaction, str]]] = {
        (COMPLETED, "G"): _retransmit,
        (COMPLETED, "H"): TransactionBase._timeout,
        (CONFIRMED, "I"): TransactionBase._end,
        (ACCEPTED, "L"): TransactionBase._end,
    }

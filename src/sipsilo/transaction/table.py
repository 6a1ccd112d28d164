"""Shared machinery for the four transaction state machines.

Each machine keeps its transitions as data: class-level tables that map
``(state, event)`` to a :class:`Transition`, the action to run and the state
to go to. The next state is never set inside an action, so the whole graph
can be read from the tables (and drawn: :func:`edges`, :func:`to_dot`).

``Transition.reliable`` names where the machine goes instead on a reliable
transport: the states that only absorb retransmissions (Completed of a
non-INVITE, Confirmed, ...) are skipped there and the machine terminates at
once (§17.1.2.2, §17.2.1, §17.2.2). Entering a state may start that state's
timer; those entry actions are a table too (``_ENTER``), run only when the
state changes, so a self-transition never restarts them.

Events a table has no entry for are ignored (the RFC's "ignore anything
else"). The base class tracks which timers are armed so that termination can
cancel exactly those, and so that a stale timer firing is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from sipsilo.sip.message import Request, Response
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
from sipsilo.transaction.timers import TimerConfig


class State(StrEnum):
    """Transaction states (RFC 3261 §17, RFC 6026's Accepted). Strings, so logs print them."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"  # RFC 6026
    TERMINATED = "terminated"


class Event(StrEnum):
    """Message events: a response by class, or a request (retransmission or ACK)."""

    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FINAL_ERROR = "3xx-6xx"  # "final non-2xx" in RFC 3261's words
    REQUEST = "request"  # the server transaction's request again
    ACK = "ack"


class Timer(StrEnum):
    """The timers of §17 (table 4) plus RFC 6026's L and M; each is an event too."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"


# Module-level names for the states and response classes, as used by the machines.
CALLING = State.CALLING
TRYING = State.TRYING
PROCEEDING = State.PROCEEDING
COMPLETED = State.COMPLETED
CONFIRMED = State.CONFIRMED
ACCEPTED = State.ACCEPTED
TERMINATED = State.TERMINATED
PROVISIONAL = Event.PROVISIONAL
SUCCESS = Event.SUCCESS
FINAL_ERROR = Event.FINAL_ERROR


def response_class(status: int) -> Event:
    if status < 200:
        return PROVISIONAL
    if status < 300:
        return SUCCESS
    return FINAL_ERROR


M = TypeVar("M", bound="TransactionBase")
A = TypeVar("A")
Action = Callable[[M, A], list[Effect]]


@dataclass(frozen=True)
class Transition(Generic[M, A]):
    """One table entry: run ``action``, then go to ``next`` (``reliable`` on TCP & co)."""

    action: Action[M, A]
    next: State
    reliable: State | None = None

    def target(self, reliable: bool) -> State:
        return self.reliable if reliable and self.reliable is not None else self.next


def go(action: Action[M, A], next: State, *, reliable: State | None = None) -> Transition[M, A]:
    return Transition(action, next, reliable)


Table = Mapping[tuple[State, str], Transition[M, A]]
Rows = dict[tuple[State, str], Transition[M, A]]  # a machine's table, as it spells it
Entries = dict[State, Callable[[M], list[Effect]]]  # a machine's entry actions


def non_invite_answers(provisional: Action[M, A], final: Action[M, A]) -> Rows[M, A]:
    """The rows both non-INVITE machines share (§17.1.2 figure 6, §17.2.2 figure 8):
    in Trying or Proceeding a 1xx leads to Proceeding, a final to Completed
    (Terminated on a reliable transport)."""
    rows: Rows[M, A] = {}
    for state in (TRYING, PROCEEDING):
        rows[(state, PROVISIONAL)] = go(provisional, PROCEEDING)
        rows[(state, SUCCESS)] = go(final, COMPLETED, reliable=TERMINATED)
        rows[(state, FINAL_ERROR)] = go(final, COMPLETED, reliable=TERMINATED)
    return rows


def nothing(machine: TransactionBase, arg: object) -> list[Effect]:
    """No effect of its own: absorb the event, or just change state."""
    return []


def timeout(machine: TransactionBase, arg: object) -> list[Effect]:
    """The timer waiting for the peer ran out (F, B, H): tell the TU."""
    return [Timeout()]


class TransactionBase:
    """State, transport reliability, timer bookkeeping and the transport-error rule."""

    state: State
    _TIMERS: ClassVar[Mapping[tuple[State, str], Transition[Any, str]]] = {}
    # Entry actions: what entering a state starts (its timers); run on a change of state.
    _ENTER: ClassVar[Mapping[State, Callable[[Any], list[Effect]]]] = {}

    def __init__(self, reliable: bool, timers: TimerConfig) -> None:
        self.reliable = reliable
        self.timers = timers
        self._armed: dict[str, float] = {}  # name -> delay, in arming order

    @property
    def terminated(self) -> bool:
        return self.state == TERMINATED

    @property
    def armed_timers(self) -> tuple[str, ...]:
        """Names of the timers currently running (for the glue's sanity checks)."""
        return tuple(self._armed)

    def on_timer(self, name: str) -> list[Effect]:
        if self._armed.pop(name, None) is None:
            return []  # stale or unknown
        return self._step(self._TIMERS, name, name)

    def on_transport_error(self) -> list[Effect]:
        """Any state: §17.1.4 / §17.2.4, inform the TU and terminate."""
        if self.terminated:
            return []
        self.state = TERMINATED
        return [TransportFailed(), *self._cancel(*self._armed), Terminated()]

    def _step(self: M, table: Table[M, A], event: str, arg: A) -> list[Effect]:
        """Look ``(state, event)`` up, run its action, then enter the next state."""
        transition = table.get((self.state, event))
        if transition is None:
            return []
        effects = transition.action(self, arg)
        target = transition.target(self.reliable)
        if target == self.state:
            return effects
        self.state = target
        if target == TERMINATED:
            return [*effects, *self._cancel(*self._armed), Terminated()]
        enter = self._ENTER.get(target)
        return effects if enter is None else [*effects, *enter(self)]

    def _start(self, name: str, delay: float) -> StartTimer:
        self._armed.pop(name, None)  # re-arming moves it to the end
        self._armed[name] = delay
        return StartTimer(name, delay)

    def _cancel(self, *names: str) -> list[Effect]:
        effects: list[Effect] = []
        for name in names:
            if self._armed.pop(name, None) is not None:
                effects.append(CancelTimer(name))
        return effects


class ClientBase(TransactionBase):
    """What both client transactions share: the request, its first send, responses.

    ``start`` sends the request, arms the retransmission timer on an
    unreliable transport (E or A, from T1) and the guard (F or B, fr_timer).
    """

    _RETRANSMIT: ClassVar[Timer]
    _GUARD: ClassVar[Timer]
    _RESPONSES: ClassVar[Mapping[tuple[State, str], Transition[Any, Response]]] = {}

    def __init__(self, request: Request, reliable: bool, timers: TimerConfig, state: State) -> None:
        super().__init__(reliable, timers)
        self.request = request
        self.state = state
        self._interval = timers.t1  # current retransmission interval

    def start(self) -> list[Effect]:
        effects: list[Effect] = [Send(self.request)]
        if not self.reliable:
            effects.append(self._start(self._RETRANSMIT, self._interval))
        effects.append(self._start(self._GUARD, self.timers.fr_timer))
        return effects

    def on_response(self, response: Response) -> list[Effect]:
        return self._step(self._RESPONSES, response_class(response.status), response)


class ServerBase(TransactionBase):
    """What both server transactions share: the request, its retransmissions, the TU's answers."""

    _REQUESTS: ClassVar[Mapping[tuple[State, str], Transition[Any, Request]]] = {}
    _TU: ClassVar[Mapping[tuple[State, str], Transition[Any, Response]]] = {}

    def __init__(self, request: Request, reliable: bool, timers: TimerConfig, state: State) -> None:
        super().__init__(reliable, timers)
        self.request = request
        self.state = state
        self.last_response: Response | None = None

    def start(self) -> list[Effect]:
        return [PassToTU(self.request)]

    def on_request(self, request: Request) -> list[Effect]:
        kind = Event.ACK if request.method == "ACK" else Event.REQUEST
        return self._step(self._REQUESTS, kind, request)

    def on_tu_response(self, response: Response) -> list[Effect]:
        return self._step(self._TU, response_class(response.status), response)


TABLE_NAMES = ("_REQUESTS", "_RESPONSES", "_TU", "_TIMERS")


@dataclass(frozen=True)
class Edge:
    """One arrow of a machine's graph, as its tables define it."""

    table: str
    state: State
    event: str
    action: str
    next: State
    reliable: State | None


def edges(cls: type[TransactionBase]) -> Iterator[Edge]:
    """Every transition of ``cls``, table by table, in table order."""
    for name in TABLE_NAMES:
        table: Mapping[tuple[State, str], Transition[Any, Any]] = getattr(cls, name, {})
        for (state, event), t in table.items():
            action = getattr(t.action, "__name__", str(t.action)).lstrip("_")
            yield Edge(name.strip("_").lower(), state, str(event), action, t.next, t.reliable)


def to_dot(cls: type[TransactionBase]) -> str:
    """The machine as a Graphviz digraph: one arrow per transition (dashed: reliable)."""
    lines = [f"digraph {cls.__name__} {{", "  rankdir=LR;"]
    for e in edges(cls):
        label = f"{e.event} / {e.action}"
        lines.append(f'  {e.state} -> {e.next} [label="{label}"];')
        if e.reliable is not None:
            lines.append(f'  {e.state} -> {e.reliable} [label="{label} (reliable)", style=dashed];')
    for state, enter in cls._ENTER.items():
        lines.append(f'  {state} [label="{state}\\nentry: {enter.__name__.lstrip("_")}"];')
    lines.append("}")
    return "\n".join(lines)

"""Shared machinery for the four transaction state machines.

Each machine keeps its transitions in class-level tables keyed by
``(state, event)``; :func:`dispatch` looks the pair up and runs the handler, or
returns no effects when the table has no entry (the RFC's "ignore anything
else"). The base class tracks which timers are armed so that termination can
cancel exactly those, and so that a stale timer firing is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from sipsilo.transaction.effects import (
    CancelTimer,
    Effect,
    StartTimer,
    Terminated,
    Timeout,
    TransportFailed,
)
from sipsilo.transaction.timers import TimerConfig

# States. Strings, not an Enum, so that logs and the glue can print them as is.
CALLING = "calling"
TRYING = "trying"
PROCEEDING = "proceeding"
COMPLETED = "completed"
CONFIRMED = "confirmed"
ACCEPTED = "accepted"  # RFC 6026
TERMINATED = "terminated"

# Response classes, the event kinds for responses.
PROVISIONAL = "1xx"
SUCCESS = "2xx"
FINAL_ERROR = "3xx-6xx"  # "final non-2xx" in RFC 3261's words


def response_class(status: int) -> str:
    if status < 200:
        return PROVISIONAL
    if status < 300:
        return SUCCESS
    return FINAL_ERROR


class TransactionBase:
    """State, transport reliability, timer bookkeeping and the transport-error rule."""

    state: str

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

    def _fired(self, name: str) -> bool:
        """Record that ``name`` fired; False when it was not armed (stale or unknown)."""
        return self._armed.pop(name, None) is not None

    def _terminate(self, *outcome: Effect) -> list[Effect]:
        self.state = TERMINATED
        return [*outcome, *self._cancel(*self._armed), Terminated()]

    # Timer handlers every machine shares: the last timer ran out quietly
    # (K, J, I, L, D) or the one waiting for the peer did (F, B, H).
    def _end(self, name: str) -> list[Effect]:
        return self._terminate()

    def _timeout(self, name: str) -> list[Effect]:
        return self._terminate(Timeout())

    def on_transport_error(self) -> list[Effect]:
        """Any state: §17.1.4 / §17.2.4, inform the TU and terminate."""
        if self.terminated:
            return []
        return self._terminate(TransportFailed())


M = TypeVar("M", bound=TransactionBase)
A = TypeVar("A")
Handler = Callable[[M, A], list[Effect]]


def dispatch(
    table: Mapping[tuple[str, str], Handler[M, A]], machine: M, event: str, arg: A
) -> list[Effect]:
    handler = table.get((machine.state, event))
    if handler is None:
        return []
    return handler(machine, arg)

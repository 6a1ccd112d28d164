"""A tiny deterministic scheduler that drives one transaction.

It applies effects the way the asyncio glue must (StartTimer replaces a timer
of the same name, CancelTimer removes it, fired timers go to ``on_timer``) and
logs every effect with the virtual time it happened at, so tests can assert
exact send times. It also checks the effect protocol: a CancelTimer names an
armed timer, Terminated comes last with no timer left running.
"""

from __future__ import annotations

from typing import Protocol

from sipsilo.transaction import CancelTimer, Effect, Send, StartTimer, Terminated


class Machine(Protocol):
    def on_timer(self, name: str) -> list[Effect]: ...


class FakeClock:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.now = 0.0
        self.timers: dict[str, tuple[float, int]] = {}  # name -> (due, arming order)
        self.log: list[tuple[float, Effect]] = []
        self.terminated = False
        self._seq = 0

    def apply(self, effects: list[Effect]) -> list[Effect]:
        for index, effect in enumerate(effects):
            assert not self.terminated, f"effect after Terminated: {effect}"
            self.log.append((self.now, effect))
            if isinstance(effect, StartTimer):
                self._seq += 1
                self.timers[effect.name] = (self.now + effect.delay, self._seq)
            elif isinstance(effect, CancelTimer):
                assert effect.name in self.timers, f"cancel of an unarmed timer {effect.name}"
                del self.timers[effect.name]
            elif isinstance(effect, Terminated):
                assert index == len(effects) - 1, "Terminated must be the last effect"
                assert not self.timers, f"timers left running at Terminated: {self.timers}"
                self.terminated = True
        return effects

    def advance(self, until: float) -> None:
        """Fire, in time order, every timer due at or before ``until``."""
        while self.timers:
            name, (due, _) = min(self.timers.items(), key=lambda item: item[1])
            if due > until:
                break
            del self.timers[name]
            self.now = due
            self.apply(self.machine.on_timer(name))
        self.now = max(self.now, until)

    def run(self, limit: float = 10_000.0) -> None:
        """Fire timers until none is left (or the virtual time passes ``limit``)."""
        self.advance(limit)

    def at(self, when: float) -> list[Effect]:
        """Effects logged at virtual time ``when``."""
        return [effect for time, effect in self.log if time == when]

    def send_times(self) -> list[float]:
        return [time for time, effect in self.log if isinstance(effect, Send)]

    def first(self, kind: type) -> float:
        """Time of the first effect of class ``kind``."""
        return next(time for time, effect in self.log if isinstance(effect, kind))

"""The transition tables are the graph: read it, draw it, and keep states out of actions."""

from __future__ import annotations

import inspect
import re

import pytest

from sipsilo.transaction import client, server
from sipsilo.transaction.table import TERMINATED, State, TransactionBase, edges, to_dot

from .reach import ICT, IST, NICT, NIST

INITIAL = {NICT: State.TRYING, ICT: State.CALLING, NIST: State.TRYING, IST: State.PROCEEDING}


@pytest.mark.parametrize("cls", list(INITIAL), ids=lambda c: c.__name__)
def test_every_state_is_reachable_and_can_terminate(cls: type[TransactionBase]) -> None:
    arrows: dict[State, set[State]] = {}
    for e in edges(cls):
        arrows.setdefault(e.state, set()).add(e.next)
        if e.reliable is not None:
            arrows[e.state].add(e.reliable)
    seen, todo = set(), [INITIAL[cls]]
    while todo:
        state = todo.pop()
        if state not in seen:
            seen.add(state)
            todo.extend(arrows.get(state, ()))
    assert TERMINATED in seen
    assert set(arrows) <= seen  # no table entry for a state the machine never enters
    for state in seen - {TERMINATED}:
        # from every state some path leads to Terminated (a timer or a final)
        path, frontier = {state}, [state]
        while frontier:
            for nxt in arrows.get(frontier.pop(), ()):
                if nxt not in path:
                    path.add(nxt)
                    frontier.append(nxt)
        assert TERMINATED in path, state


def test_dot_draws_every_edge() -> None:
    dot = to_dot(IST)
    assert dot.startswith("digraph InviteServerTransaction {")
    assert 'completed -> confirmed [label="ack / confirm"];' in dot
    assert 'completed -> terminated [label="ack / confirm (reliable)", style=dashed];' in dot
    assert 'completed -> terminated [label="H / timeout"];' in dot
    assert dot.count(" -> ") == sum(1 + (e.reliable is not None) for e in edges(IST))
    assert 'accepted [label="accepted\\nentry: enter_accepted"];' in dot


@pytest.mark.parametrize("module", [client, server], ids=lambda m: m.__name__)
def test_actions_never_set_the_state(module: object) -> None:
    # The next state is the table's to say; an action that assigns it hides an arrow.
    source = inspect.getsource(module)  # type: ignore[arg-type]
    assert re.findall(r"self\.state\s*=(?!=)", source) == []

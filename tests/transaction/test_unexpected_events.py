"""Events with no table entry in a state are ignored: no effect, no change."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from sipsilo.transaction.table import TransactionBase as Tx

from .messages import ack, request, response
from .reach import ICT, IST, NICT, NIST, ict, ist, nict, nist

REACH: dict[type[Tx], tuple[Callable[[str], Tx], tuple[str, ...]]] = {
    NICT: (nict, ("trying", "proceeding", "completed")),
    ICT: (ict, ("calling", "proceeding", "completed", "accepted")),
    NIST: (nist, ("trying", "proceeding", "completed")),
    IST: (ist, ("proceeding", "completed", "confirmed", "accepted")),
}
TIMER_NAMES = (*"ABCDEFGHIJKLM", "bogus")


def events_for(cls: type[Tx]) -> list[tuple[str, str, Callable[[Any], list[Any]]]]:
    """(table, event kind, feeder) for every event kind the machine knows."""
    out: list[tuple[str, str, Callable[[Any], list[Any]]]] = []
    method = "INVITE" if cls in (ICT, IST) else "MESSAGE"
    statuses = {"1xx": 180, "2xx": 200, "3xx-6xx": 486}
    if cls in (NICT, ICT):
        for kind, status in statuses.items():
            out.append(("_RESPONSES", kind, partial(_answer, "on_response", status)))
    else:
        out.append(("_REQUESTS", "request", lambda tx: tx.on_request(request(method))))
        out.append(("_REQUESTS", "ack", lambda tx: tx.on_request(ack(tx.request))))
        for kind, status in statuses.items():
            out.append(("_TU", kind, partial(_answer, "on_tu_response", status)))
    for name in TIMER_NAMES:
        out.append(("_TIMERS", name, partial(_fire, name)))
    return out


def _answer(feeder: str, status: int, tx: Any) -> list[Any]:
    result: list[Any] = getattr(tx, feeder)(response(tx.request, status))
    return result


def _fire(name: str, tx: Any) -> list[Any]:
    result: list[Any] = tx.on_timer(name)
    return result


UNLISTED = [
    (cls, state, table, kind, feed)
    for cls, (_, states) in REACH.items()
    for state in states
    for table, kind, feed in events_for(cls)
    if (state, kind) not in getattr(cls, table)
]


@pytest.mark.parametrize(
    ("cls", "state", "table", "kind", "feed"),
    UNLISTED,
    ids=[f"{c.__name__}-{s}-{k}" for c, s, _, k, _ in UNLISTED],
)
def test_unlisted_event_is_ignored(
    cls: type[Tx], state: str, table: str, kind: str, feed: Callable[[Any], list[Any]]
) -> None:
    tx = REACH[cls][0](state)
    armed = tx.armed_timers
    assert feed(tx) == []
    assert tx.state == state
    assert tx.armed_timers == armed


@pytest.mark.parametrize("cls", list(REACH))
def test_terminated_ignores_everything(cls: type[Tx]) -> None:
    tx = REACH[cls][0](REACH[cls][1][0])
    tx.on_transport_error()
    assert tx.state == "terminated"
    for _, _, feed in events_for(cls):
        assert feed(tx) == []
    assert tx.on_transport_error() == []

"""Every table entry has a scenario that feeds it one event and checks the outcome.

``reach`` drives a fresh transaction into the entry's state; a meta test pins
the set of scenarios to the set of table entries, so adding a transition
without a test fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import cast

import pytest

from sipsilo.transaction import (
    CancelTimer,
    PassToTU,
    Send,
    StartTimer,
    Terminated,
    Timeout,
)
from sipsilo.transaction.table import TransactionBase as Tx

from .messages import ack, request, response
from .reach import ICT, IST, NICT, NIST, ict, ist, nict, nist

Scenario = Callable[[], None]
SCENARIOS: dict[tuple[type[Tx], str, str, str], Scenario] = {}


def entry(cls: type[Tx], table: str, state: str, event: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[(cls, table, state, event)] = fn
        return fn

    return register


for _state in ("trying", "proceeding"):

    def _nict_1xx(state: str = _state) -> None:
        tx = nict(state)
        r = response(tx.request, 180)
        assert tx.on_response(r) == [PassToTU(r)]
        assert tx.state == "proceeding"

    def _nict_final(state: str = _state, status: int = 200) -> None:
        tx = nict(state)
        r = response(tx.request, status)
        assert tx.on_response(r) == [
            PassToTU(r),
            CancelTimer("E"),
            CancelTimer("F"),
            StartTimer("K", 5.0),
        ]
        assert tx.state == "completed"

    def _nict_e(state: str = _state) -> None:
        tx = nict(state)
        interval = 1.0 if state == "trying" else 4.0
        assert tx.on_timer("E") == [Send(tx.request), StartTimer("E", interval)]
        assert tx.state == state

    def _nict_f(state: str = _state) -> None:
        tx = nict(state)
        assert tx.on_timer("F") == [Timeout(), CancelTimer("E"), Terminated()]

    entry(NICT, "_RESPONSES", _state, "1xx")(_nict_1xx)
    entry(NICT, "_RESPONSES", _state, "2xx")(_nict_final)
    entry(NICT, "_RESPONSES", _state, "3xx-6xx")(partial(_nict_final, _state, 404))
    entry(NICT, "_TIMERS", _state, "E")(_nict_e)
    entry(NICT, "_TIMERS", _state, "F")(_nict_f)

    def _ict_1xx(state: str = _state.replace("trying", "calling")) -> None:
        tx = ict(state)
        r = response(tx.request, 183)
        cancels = [CancelTimer("A"), CancelTimer("B")] if state == "calling" else []
        assert tx.on_response(r) == [PassToTU(r), *cancels, StartTimer("C", 180.0)]
        assert tx.state == "proceeding"

    def _ict_2xx(state: str = _state.replace("trying", "calling")) -> None:
        tx = ict(state)
        r = response(tx.request, 200)
        stopped = ["A", "B"] if state == "calling" else ["C"]
        assert tx.on_response(r) == [
            PassToTU(r),
            *[CancelTimer(n) for n in stopped],
            StartTimer("M", 32.0),
        ]
        assert tx.state == "accepted"

    def _ict_failure(state: str = _state.replace("trying", "calling")) -> None:
        tx = ict(state)
        r = response(tx.request, 503)
        stopped = ["A", "B"] if state == "calling" else ["C"]
        assert tx.on_response(r) == [
            PassToTU(r),
            Send(tx.ack) if tx.ack else None,
            *[CancelTimer(n) for n in stopped],
            StartTimer("D", 32.0),
        ]
        assert tx.state == "completed"

    _ict_state = _state.replace("trying", "calling")
    entry(ICT, "_RESPONSES", _ict_state, "1xx")(_ict_1xx)
    entry(ICT, "_RESPONSES", _ict_state, "2xx")(_ict_2xx)
    entry(ICT, "_RESPONSES", _ict_state, "3xx-6xx")(_ict_failure)

    def _nist_1xx(state: str = _state) -> None:
        tx = nist(state)
        r = response(tx.request, 180)
        assert tx.on_tu_response(r) == [Send(r)]
        assert tx.state == "proceeding"
        assert tx.last_response is r

    def _nist_final(state: str = _state, status: int = 200) -> None:
        tx = nist(state)
        r = response(tx.request, status)
        assert tx.on_tu_response(r) == [Send(r), StartTimer("J", 32.0)]
        assert tx.state == "completed"

    entry(NIST, "_TU", _state, "1xx")(_nist_1xx)
    entry(NIST, "_TU", _state, "2xx")(_nist_final)
    entry(NIST, "_TU", _state, "3xx-6xx")(partial(_nist_final, _state, 603))


@entry(NICT, "_RESPONSES", "completed", "2xx")
def _nict_completed_2xx() -> None:
    tx = nict("completed")
    assert tx.on_response(response(tx.request, 200)) == []
    assert tx.state == "completed"


@entry(NICT, "_RESPONSES", "completed", "3xx-6xx")
def _nict_completed_err() -> None:
    tx = nict("completed")
    assert tx.on_response(response(tx.request, 500)) == []
    assert tx.state == "completed"


@entry(NICT, "_TIMERS", "completed", "K")
def _nict_k() -> None:
    assert nict("completed").on_timer("K") == [Terminated()]


@entry(ICT, "_RESPONSES", "completed", "3xx-6xx")
def _ict_reack() -> None:
    tx = ict("completed")
    assert tx.ack is not None
    assert tx.on_response(response(tx.request, 486)) == [Send(tx.ack)]
    assert tx.state == "completed"


@entry(ICT, "_RESPONSES", "accepted", "2xx")
def _ict_more_2xx() -> None:
    tx = ict("accepted")
    r = response(tx.request, 200, to_tag="fork2")
    assert tx.on_response(r) == [PassToTU(r)]
    assert tx.state == "accepted"


@entry(ICT, "_TIMERS", "calling", "A")
def _ict_a() -> None:
    tx = ict("calling")
    assert tx.on_timer("A") == [Send(tx.request), StartTimer("A", 1.0)]
    assert tx.on_timer("A") == [Send(tx.request), StartTimer("A", 2.0)]


@entry(ICT, "_TIMERS", "calling", "B")
def _ict_b() -> None:
    assert ict("calling").on_timer("B") == [Timeout(), CancelTimer("A"), Terminated()]


@entry(ICT, "_TIMERS", "proceeding", "C")
def _ict_c() -> None:
    tx = ict("proceeding")
    assert tx.on_timer("C") == [Timeout(), StartTimer("B", 32.0)]
    assert tx.state == "proceeding"


@entry(ICT, "_TIMERS", "proceeding", "B")
def _ict_guard_b() -> None:
    assert ict("proceeding").on_timer("B") == []  # not armed before C fired
    assert ict("proceeding", timed_out=True).on_timer("B") == [Terminated()]


@entry(ICT, "_TIMERS", "completed", "D")
def _ict_d() -> None:
    assert ict("completed").on_timer("D") == [Terminated()]


@entry(ICT, "_TIMERS", "accepted", "M")
def _ict_m() -> None:
    assert ict("accepted").on_timer("M") == [Terminated()]


@entry(NIST, "_REQUESTS", "trying", "request")
def _nist_absorb() -> None:
    assert nist("trying").on_request(request()) == []


@entry(NIST, "_REQUESTS", "proceeding", "request")
def _nist_resend_provisional() -> None:
    tx = nist("proceeding")
    assert tx.last_response is not None and tx.last_response.status == 100
    assert tx.on_request(request()) == [Send(tx.last_response)]


@entry(NIST, "_REQUESTS", "completed", "request")
def _nist_resend_final() -> None:
    tx = nist("completed")
    assert tx.last_response is not None and tx.last_response.status == 200
    assert tx.on_request(request()) == [Send(tx.last_response)]
    assert tx.state == "completed"


@entry(NIST, "_TIMERS", "completed", "J")
def _nist_j() -> None:
    assert nist("completed").on_timer("J") == [Terminated()]


@entry(IST, "_REQUESTS", "proceeding", "request")
def _ist_resend_provisional() -> None:
    tx = ist("proceeding")
    assert tx.last_response is not None and tx.last_response.status == 100
    assert tx.on_request(request("INVITE")) == [Send(tx.last_response)]


@entry(IST, "_REQUESTS", "completed", "request")
def _ist_resend_final() -> None:
    tx = ist("completed")
    assert tx.last_response is not None and tx.last_response.status == 486
    assert tx.on_request(request("INVITE")) == [Send(tx.last_response)]


@entry(IST, "_REQUESTS", "completed", "ack")
def _ist_confirm() -> None:
    tx = ist("completed")
    assert tx.on_request(ack(tx.request)) == [
        CancelTimer("G"),
        CancelTimer("H"),
        StartTimer("I", 5.0),
    ]
    assert tx.state == "confirmed"


@entry(IST, "_REQUESTS", "confirmed", "request")
def _ist_confirmed_invite() -> None:
    assert ist("confirmed").on_request(request("INVITE")) == []


@entry(IST, "_REQUESTS", "confirmed", "ack")
def _ist_confirmed_ack() -> None:
    tx = ist("confirmed")
    assert tx.on_request(ack(tx.request)) == []


@entry(IST, "_REQUESTS", "accepted", "request")
def _ist_accepted_invite() -> None:
    assert ist("accepted").on_request(request("INVITE")) == []


@entry(IST, "_REQUESTS", "accepted", "ack")
def _ist_accepted_ack() -> None:
    tx = ist("accepted")
    a = ack(tx.request)
    assert tx.on_request(a) == [PassToTU(a)]


@entry(IST, "_TU", "proceeding", "1xx")
def _ist_1xx() -> None:
    tx = ist("proceeding")
    r = response(tx.request, 180)
    assert tx.on_tu_response(r) == [Send(r)]
    assert tx.state == "proceeding"


@entry(IST, "_TU", "proceeding", "2xx")
def _ist_2xx() -> None:
    tx = ist("proceeding")
    r = response(tx.request, 200)
    assert tx.on_tu_response(r) == [Send(r), StartTimer("L", 32.0)]
    assert tx.state == "accepted"


@entry(IST, "_TU", "proceeding", "3xx-6xx")
def _ist_failure() -> None:
    tx = ist("proceeding")
    r = response(tx.request, 302)
    assert tx.on_tu_response(r) == [Send(r), StartTimer("G", 0.5), StartTimer("H", 32.0)]
    assert tx.state == "completed"


@entry(IST, "_TU", "accepted", "2xx")
def _ist_more_2xx() -> None:
    tx = ist("accepted")
    r = response(tx.request, 200)
    assert tx.on_tu_response(r) == [Send(r)]


@entry(IST, "_TIMERS", "completed", "G")
def _ist_g() -> None:
    tx = ist("completed")
    final = tx.last_response
    assert final is not None
    assert [tx.on_timer("G")[1] for _ in range(5)] == [
        StartTimer("G", d) for d in (1.0, 2.0, 4.0, 4.0, 4.0)
    ]
    assert tx.on_timer("G")[0] == Send(final)


@entry(IST, "_TIMERS", "completed", "H")
def _ist_h() -> None:
    assert ist("completed").on_timer("H") == [Timeout(), CancelTimer("G"), Terminated()]


@entry(IST, "_TIMERS", "confirmed", "I")
def _ist_i() -> None:
    assert ist("confirmed").on_timer("I") == [Terminated()]


@entry(IST, "_TIMERS", "accepted", "L")
def _ist_l() -> None:
    assert ist("accepted").on_timer("L") == [Terminated()]


TABLES = {
    NICT: ("_RESPONSES", "_TIMERS"),
    ICT: ("_RESPONSES", "_TIMERS"),
    NIST: ("_REQUESTS", "_TU", "_TIMERS"),
    IST: ("_REQUESTS", "_TU", "_TIMERS"),
}


def table_entries() -> set[tuple[type[Tx], str, str, str]]:
    return {
        (cls, name, state, event)
        for cls, names in TABLES.items()
        for name in names
        for (state, event) in cast(dict[tuple[str, str], object], getattr(cls, name))
    }


def test_every_table_entry_has_a_scenario() -> None:
    assert set(SCENARIOS) == table_entries()


def _order(key: tuple[type[Tx], str, str, str]) -> tuple[str, ...]:
    return (key[0].__name__, *key[1:])


ENTRY_KEYS = sorted(SCENARIOS, key=_order)


@pytest.mark.parametrize("key", ENTRY_KEYS, ids=["-".join(_order(k)) for k in ENTRY_KEYS])
def test_table_entry(key: tuple[type[Tx], str, str, str]) -> None:
    SCENARIOS[key]()

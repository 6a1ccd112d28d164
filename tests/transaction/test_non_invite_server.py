"""Non-INVITE server transaction (RFC 3261 §17.2.2)."""

from __future__ import annotations

from sipsilo.transaction import (
    CancelTimer,
    NonInviteServerTransaction,
    PassToTU,
    Send,
    StartTimer,
    Terminated,
    TimerConfig,
    TransportFailed,
)

from .fakeclock import FakeClock
from .messages import request, response


def started(reliable: bool = False) -> FakeClock:
    tx = NonInviteServerTransaction(request(), reliable, TimerConfig())
    clock = FakeClock(tx)
    clock.apply(tx.start())
    return clock


def tx_of(clock: FakeClock) -> NonInviteServerTransaction:
    assert isinstance(clock.machine, NonInviteServerTransaction)
    return clock.machine


def test_start_passes_the_request_up_once() -> None:
    tx = NonInviteServerTransaction(request(), reliable=False, timers=TimerConfig())
    assert tx.state == "trying"
    assert tx.start() == [PassToTU(tx.request)]


def test_retransmission_in_trying_is_absorbed() -> None:
    clock = started()
    tx = tx_of(clock)
    assert clock.apply(tx.on_request(request())) == []
    assert tx.state == "trying"


def test_provisional_then_retransmission_resends_it() -> None:
    clock = started()
    tx = tx_of(clock)
    trying = response(tx.request, 100)
    assert clock.apply(tx.on_tu_response(trying)) == [Send(trying)]
    assert tx.state == "proceeding"
    assert clock.apply(tx.on_request(request())) == [Send(trying)]
    ringing = response(tx.request, 180)
    assert clock.apply(tx.on_tu_response(ringing)) == [Send(ringing)]
    assert clock.apply(tx.on_request(request())) == [Send(ringing)]


def test_final_in_proceeding_completes() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.apply(tx.on_tu_response(response(tx.request, 100)))
    ok = response(tx.request, 200)
    assert clock.apply(tx.on_tu_response(ok)) == [Send(ok), StartTimer("J", 32.0)]
    assert tx.state == "completed"


def test_error_final_in_proceeding_completes() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.apply(tx.on_tu_response(response(tx.request, 100)))
    nope = response(tx.request, 480)
    assert clock.apply(tx.on_tu_response(nope)) == [Send(nope), StartTimer("J", 32.0)]


def test_completed_resends_final_once_per_retransmission_tu_sees_request_once() -> None:
    clock = started()
    tx = tx_of(clock)
    accepted = response(tx.request, 202)
    assert clock.apply(tx.on_tu_response(accepted)) == [Send(accepted), StartTimer("J", 32.0)]
    for when in (0.5, 1.5, 3.5, 7.5):
        clock.advance(when)
        clock.apply(tx.on_request(request()))
    clock.run()
    sends = [(t, e) for t, e in clock.log if isinstance(e, Send)]
    assert sends == [(0.0, Send(accepted))] + [(t, Send(accepted)) for t in (0.5, 1.5, 3.5, 7.5)]
    assert [e for _, e in clock.log if isinstance(e, PassToTU)] == [PassToTU(tx.request)]
    assert clock.at(32.0) == [Terminated()]


def test_error_final_in_trying_and_tu_answers_after_final_are_ignored() -> None:
    clock = started()
    tx = tx_of(clock)
    busy = response(tx.request, 486)
    assert clock.apply(tx.on_tu_response(busy)) == [Send(busy), StartTimer("J", 32.0)]
    assert clock.apply(tx.on_tu_response(response(tx.request, 200))) == []
    assert clock.apply(tx.on_tu_response(response(tx.request, 180))) == []
    assert tx.last_response is busy


def test_j_is_64_t1() -> None:
    tx = NonInviteServerTransaction(request(), False, TimerConfig(t1=0.1, wt_timer=1.0))
    tx.start()
    assert tx.on_tu_response(response(tx.request, 200))[-1] == StartTimer("J", 6.4)


def test_reliable_final_terminates_at_once() -> None:
    clock = started(reliable=True)
    tx = tx_of(clock)
    ok = response(tx.request, 200)
    assert clock.apply(tx.on_tu_response(ok)) == [Send(ok), Terminated()]
    assert tx.on_request(request()) == []


def test_transport_error() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.apply(tx.on_tu_response(response(tx.request, 200)))
    assert clock.apply(tx.on_transport_error()) == [
        TransportFailed(),
        CancelTimer("J"),
        Terminated(),
    ]
    assert tx.on_request(request()) == []
    assert tx.on_tu_response(response(tx.request, 200)) == []
    assert tx.on_timer("J") == []


def test_unexpected_are_ignored() -> None:
    clock = started()
    tx = tx_of(clock)
    assert tx.on_timer("J") == []  # not armed yet
    # An ACK never belongs to a non-INVITE transaction; ignore it.
    assert tx.on_request(request("ACK")) == []
    assert tx.state == "trying"

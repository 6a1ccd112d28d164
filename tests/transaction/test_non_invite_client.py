"""Non-INVITE client transaction (RFC 3261 §17.1.2)."""

from __future__ import annotations

from sipsilo.transaction import (
    CancelTimer,
    NonInviteClientTransaction,
    PassToTU,
    Send,
    StartTimer,
    Terminated,
    Timeout,
    TimerConfig,
    TransportFailed,
)

from .fakeclock import FakeClock
from .messages import request, response


def started(reliable: bool = False, timers: TimerConfig | None = None) -> FakeClock:
    tx = NonInviteClientTransaction(request(), reliable, timers or TimerConfig())
    clock = FakeClock(tx)
    clock.apply(tx.start())
    return clock


def tx_of(clock: FakeClock) -> NonInviteClientTransaction:
    assert isinstance(clock.machine, NonInviteClientTransaction)
    return clock.machine


def test_start_sends_and_arms_e_and_f() -> None:
    tx = NonInviteClientTransaction(request(), reliable=False, timers=TimerConfig())
    assert tx.state == "trying"
    assert tx.start() == [Send(tx.request), StartTimer("E", 0.5), StartTimer("F", 32.0)]


def test_udp_retransmits_with_backoff_capped_at_t2_then_times_out_at_f() -> None:
    clock = started()
    clock.run()
    assert clock.send_times() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(
        isinstance(e, Send) and e.message is tx_of(clock).request
        for _, e in clock.log
        if isinstance(e, Send)
    )
    assert clock.at(32.0) == [Timeout(), CancelTimer("E"), Terminated()]
    assert tx_of(clock).state == "terminated"


def test_fr_timer_sets_timer_f() -> None:
    clock = started(timers=TimerConfig(fr_timer=5.0))
    clock.run()
    assert clock.send_times() == [0, 0.5, 1.5, 3.5]
    assert clock.first(Timeout) == 5.0


def test_proceeding_retransmits_every_t2() -> None:
    clock = started()
    clock.advance(1.0)
    tx = tx_of(clock)
    trying = response(tx.request, 100)
    assert clock.apply(tx.on_response(trying)) == [PassToTU(trying)]
    assert tx.state == "proceeding"
    clock.run()
    # E was due at 1.5 with interval 1; in Proceeding it re-arms with T2 = 4.
    assert clock.send_times() == [0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert clock.first(Timeout) == 32.0


def test_more_provisionals_pass_up_in_proceeding() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.apply(tx.on_response(response(tx.request, 100)))
    ringing = response(tx.request, 180)
    assert clock.apply(tx.on_response(ringing)) == [PassToTU(ringing)]
    assert tx.state == "proceeding"


def test_final_in_trying_completes_and_absorbs_retransmissions_until_k() -> None:
    clock = started()
    clock.advance(2.0)
    tx = tx_of(clock)
    ok = response(tx.request, 200)
    assert clock.apply(tx.on_response(ok)) == [
        PassToTU(ok),
        CancelTimer("E"),
        CancelTimer("F"),
        StartTimer("K", 5.0),
    ]
    assert tx.state == "completed"
    assert clock.apply(tx.on_response(ok)) == []
    assert clock.apply(tx.on_response(response(tx.request, 404))) == []
    clock.run()
    assert clock.at(7.0) == [Terminated()]
    assert clock.send_times() == [0, 0.5, 1.5]


def test_final_in_proceeding_completes() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.apply(tx.on_response(response(tx.request, 180)))
    busy = response(tx.request, 486)
    assert clock.apply(tx.on_response(busy)) == [
        PassToTU(busy),
        CancelTimer("E"),
        CancelTimer("F"),
        StartTimer("K", 5.0),
    ]
    assert tx.state == "completed"


def test_wt_timer_sets_timer_k() -> None:
    clock = started(timers=TimerConfig(wt_timer=1.25))
    tx = tx_of(clock)
    assert StartTimer("K", 1.25) in clock.apply(tx.on_response(response(tx.request, 202)))
    clock.run()
    assert clock.at(1.25) == [Terminated()]


def test_reliable_never_retransmits_and_times_out_at_f() -> None:
    clock = started(reliable=True)
    assert clock.log == [(0.0, Send(tx_of(clock).request)), (0.0, StartTimer("F", 32.0))]
    clock.run()
    assert clock.send_times() == [0]
    assert clock.at(32.0) == [Timeout(), Terminated()]


def test_reliable_final_terminates_at_once() -> None:
    clock = started(reliable=True)
    tx = tx_of(clock)
    clock.apply(tx.on_response(response(tx.request, 100)))
    ok = response(tx.request, 200)
    assert clock.apply(tx.on_response(ok)) == [PassToTU(ok), CancelTimer("F"), Terminated()]
    assert tx.state == "terminated"


def test_transport_error_fails_and_cancels_running_timers() -> None:
    clock = started()
    tx = tx_of(clock)
    assert clock.apply(tx.on_transport_error()) == [
        TransportFailed(),
        CancelTimer("E"),
        CancelTimer("F"),
        Terminated(),
    ]
    assert tx.on_transport_error() == []


def test_transport_error_in_completed() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.apply(tx.on_response(response(tx.request, 200)))
    assert clock.apply(tx.on_transport_error()) == [
        TransportFailed(),
        CancelTimer("K"),
        Terminated(),
    ]


def test_everything_is_ignored_once_terminated() -> None:
    clock = started()
    clock.run()
    tx = tx_of(clock)
    for status in (100, 200, 500):
        assert tx.on_response(response(tx.request, status)) == []
    for name in "EFK":
        assert tx.on_timer(name) == []
    assert tx.state == "terminated"


def test_stale_and_unknown_timers_are_ignored() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.apply(tx.on_response(response(tx.request, 200)))
    # E and F were cancelled: a late firing must do nothing.
    assert tx.on_timer("E") == []
    assert tx.on_timer("F") == []
    assert tx.on_timer("Z") == []
    assert tx.state == "completed"
    assert tx.armed_timers == ("K",)

"""INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 Accepted state)."""

from __future__ import annotations

from sipsilo.sip.message import Response
from sipsilo.transaction import (
    CancelTimer,
    InviteServerTransaction,
    PassToTU,
    Send,
    StartTimer,
    Terminated,
    Timeout,
    TimerConfig,
    TransportFailed,
)

from .fakeclock import FakeClock
from .messages import ack, request, response


def started(reliable: bool = False, send_trying: bool = True) -> FakeClock:
    tx = InviteServerTransaction(
        request("INVITE"), reliable, TimerConfig(), send_trying=send_trying
    )
    clock = FakeClock(tx)
    clock.apply(tx.start())
    return clock


def tx_of(clock: FakeClock) -> InviteServerTransaction:
    assert isinstance(clock.machine, InviteServerTransaction)
    return clock.machine


def test_start_sends_100_and_passes_up() -> None:
    tx = InviteServerTransaction(request("INVITE"), False, TimerConfig())
    effects = tx.start()
    assert tx.state == "proceeding"
    assert effects[1:] == [PassToTU(tx.request)]
    assert isinstance(effects[0], Send)
    trying = effects[0].message
    assert isinstance(trying, Response)
    assert trying.status == 100
    assert trying.to.tag is None
    assert trying.cseq == tx.request.cseq
    assert trying.headers.get_all("Via") == tx.request.headers.get_all("Via")


def test_without_send_trying_only_passes_up_and_absorbs_retransmissions() -> None:
    clock = started(send_trying=False)
    tx = tx_of(clock)
    assert clock.log == [(0.0, PassToTU(tx.request))]
    assert clock.apply(tx.on_request(request("INVITE"))) == []


def test_retransmitted_invite_resends_last_provisional() -> None:
    clock = started()
    tx = tx_of(clock)
    assert tx.last_response is not None
    assert clock.apply(tx.on_request(request("INVITE"))) == [Send(tx.last_response)]
    ringing = response(tx.request, 180)
    assert clock.apply(tx.on_tu_response(ringing)) == [Send(ringing)]
    assert clock.apply(tx.on_request(request("INVITE"))) == [Send(ringing)]
    assert [e for _, e in clock.log if isinstance(e, PassToTU)] == [PassToTU(tx.request)]


def test_error_final_retransmitted_with_g_until_h() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.advance(1.0)
    busy = response(tx.request, 486)
    assert clock.apply(tx.on_tu_response(busy)) == [
        Send(busy),
        StartTimer("G", 0.5),
        StartTimer("H", 32.0),
    ]
    assert tx.state == "completed"
    clock.run()
    finals = [t for t, e in clock.log if e == Send(busy)]
    assert finals == [1.0, 1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert clock.at(33.0) == [Timeout(), CancelTimer("G"), Terminated()]


def test_retransmitted_invite_in_completed_resends_final() -> None:
    clock = started()
    tx = tx_of(clock)
    busy = response(tx.request, 486)
    clock.apply(tx.on_tu_response(busy))
    assert clock.apply(tx.on_request(request("INVITE"))) == [Send(busy)]
    assert tx.state == "completed"


def test_ack_confirms_and_stops_retransmissions() -> None:
    clock = started()
    tx = tx_of(clock)
    busy = response(tx.request, 486)
    clock.apply(tx.on_tu_response(busy))
    clock.advance(2.0)
    assert clock.apply(tx.on_request(ack(tx.request))) == [
        CancelTimer("G"),
        CancelTimer("H"),
        StartTimer("I", 5.0),
    ]
    assert tx.state == "confirmed"
    # Confirmed absorbs ACK and INVITE retransmissions.
    assert clock.apply(tx.on_request(ack(tx.request))) == []
    assert clock.apply(tx.on_request(request("INVITE"))) == []
    clock.run()
    assert [t for t, e in clock.log if e == Send(busy)] == [0.0, 0.5, 1.5]
    assert clock.at(7.0) == [Terminated()]


def test_reliable_error_final_no_g_and_ack_terminates_at_once() -> None:
    clock = started(reliable=True)
    tx = tx_of(clock)
    busy = response(tx.request, 486)
    assert clock.apply(tx.on_tu_response(busy)) == [Send(busy), StartTimer("H", 32.0)]
    assert clock.apply(tx.on_request(ack(tx.request))) == [CancelTimer("H"), Terminated()]


def test_reliable_error_final_without_ack_times_out_at_h() -> None:
    clock = started(reliable=True)
    tx = tx_of(clock)
    clock.apply(tx.on_tu_response(response(tx.request, 500)))
    clock.run()
    assert clock.send_times() == [0.0, 0.0]
    assert clock.at(32.0) == [Timeout(), Terminated()]


def test_2xx_goes_to_accepted() -> None:
    clock = started()
    tx = tx_of(clock)
    ok = response(tx.request, 200)
    assert clock.apply(tx.on_tu_response(ok)) == [Send(ok), StartTimer("L", 32.0)]
    assert tx.state == "accepted"
    # INVITE retransmissions are absorbed, not passed up again, not answered.
    assert clock.apply(tx.on_request(request("INVITE"))) == []
    # The TU relays 2xx retransmissions; they go out.
    assert clock.apply(tx.on_tu_response(ok)) == [Send(ok)]
    # A matching ACK (for the 2xx) goes up; non-2xx from the TU are ignored.
    the_ack = ack(tx.request)
    assert clock.apply(tx.on_request(the_ack)) == [PassToTU(the_ack)]
    assert clock.apply(tx.on_tu_response(response(tx.request, 486))) == []
    clock.run()
    assert clock.at(32.0) == [Terminated()]


def test_reliable_2xx_still_waits_l() -> None:
    clock = started(reliable=True)
    tx = tx_of(clock)
    ok = response(tx.request, 200)
    assert clock.apply(tx.on_tu_response(ok)) == [Send(ok), StartTimer("L", 32.0)]


def test_tu_answers_after_final_are_ignored() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.apply(tx.on_tu_response(response(tx.request, 404)))
    for status in (180, 200, 500):
        assert tx.on_tu_response(response(tx.request, status)) == []
    clock.apply(tx.on_request(ack(tx.request)))
    for status in (180, 200, 500):
        assert tx.on_tu_response(response(tx.request, status)) == []
    assert tx.state == "confirmed"


def test_ack_in_proceeding_is_ignored() -> None:
    clock = started()
    tx = tx_of(clock)
    assert tx.on_request(ack(tx.request)) == []
    assert tx.state == "proceeding"


def test_transport_error() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.apply(tx.on_tu_response(response(tx.request, 486)))
    assert clock.apply(tx.on_transport_error()) == [
        TransportFailed(),
        CancelTimer("G"),
        CancelTimer("H"),
        Terminated(),
    ]
    assert tx.on_request(request("INVITE")) == []
    assert tx.on_timer("G") == []

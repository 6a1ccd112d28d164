"""INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 Accepted state)."""

from __future__ import annotations

from sipsilo.sip.message import Request
from sipsilo.transaction import (
    CancelTimer,
    InviteClientTransaction,
    PassToTU,
    Send,
    StartTimer,
    Terminated,
    Timeout,
    TimerConfig,
    TransportFailed,
    build_ack,
)

from .fakeclock import FakeClock
from .messages import request, response


def started(reliable: bool = False, timers: TimerConfig | None = None) -> FakeClock:
    tx = InviteClientTransaction(request("INVITE"), reliable, timers or TimerConfig())
    clock = FakeClock(tx)
    clock.apply(tx.start())
    return clock


def tx_of(clock: FakeClock) -> InviteClientTransaction:
    assert isinstance(clock.machine, InviteClientTransaction)
    return clock.machine


def sent_acks(clock: FakeClock) -> list[tuple[float, Request]]:
    return [
        (t, e.message)
        for t, e in clock.log
        if isinstance(e, Send) and isinstance(e.message, Request) and e.message.method == "ACK"
    ]


def test_start_sends_and_arms_a_and_b() -> None:
    tx = InviteClientTransaction(request("INVITE"), reliable=False, timers=TimerConfig())
    assert tx.state == "calling"
    assert tx.start() == [Send(tx.request), StartTimer("A", 0.5), StartTimer("B", 32.0)]


def test_udp_timer_a_doubles_without_cap_and_b_times_out() -> None:
    clock = started()
    clock.run()
    assert clock.send_times() == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert clock.at(32.0) == [Timeout(), CancelTimer("A"), Terminated()]


def test_reliable_sends_once_and_times_out_at_b() -> None:
    clock = started(reliable=True, timers=TimerConfig(fr_timer=10.0))
    clock.run()
    assert clock.send_times() == [0]
    assert clock.at(10.0) == [Timeout(), Terminated()]


def test_provisional_stops_retransmission_and_arms_fr_inv_timer() -> None:
    clock = started()
    clock.advance(1.0)
    tx = tx_of(clock)
    ringing = response(tx.request, 180)
    assert clock.apply(tx.on_response(ringing)) == [
        PassToTU(ringing),
        CancelTimer("A"),
        CancelTimer("B"),
        StartTimer("C", 180.0),
    ]
    assert tx.state == "proceeding"
    clock.advance(100.0)
    assert clock.send_times() == [0, 0.5]


def test_each_provisional_rearms_c() -> None:
    clock = started(timers=TimerConfig(fr_inv_timer=60.0))
    tx = tx_of(clock)
    clock.apply(tx.on_response(response(tx.request, 100)))
    clock.advance(50.0)
    ringing = response(tx.request, 180)
    assert clock.apply(tx.on_response(ringing)) == [PassToTU(ringing), StartTimer("C", 60.0)]
    clock.advance(100.0)
    assert Timeout() not in [e for _, e in clock.log]
    clock.advance(110.0)
    assert clock.at(110.0) == [Timeout(), StartTimer("B", 32.0)]


def test_c_timeout_keeps_the_transaction_to_ack_the_487() -> None:
    clock = started(timers=TimerConfig(fr_inv_timer=60.0))
    tx = tx_of(clock)
    clock.apply(tx.on_response(response(tx.request, 180)))
    clock.advance(60.0)
    assert clock.at(60.0) == [Timeout(), StartTimer("B", 32.0)]
    assert tx.state == "proceeding"
    assert tx.timed_out
    # A late provisional does not re-arm C any more.
    late = response(tx.request, 183)
    assert clock.apply(tx.on_response(late)) == [PassToTU(late)]
    clock.advance(61.0)
    terminated = response(tx.request, 487)
    effects = clock.apply(tx.on_response(terminated))
    assert effects[0] == PassToTU(terminated)
    assert isinstance(effects[1], Send) and isinstance(effects[1].message, Request)
    assert effects[1].message.method == "ACK"
    assert effects[2:] == [CancelTimer("B"), StartTimer("D", 32.0)]
    assert tx.state == "completed"


def test_c_timeout_then_silence_terminates_at_guard_b() -> None:
    clock = started(timers=TimerConfig(fr_inv_timer=60.0, fr_timer=8.0))
    tx = tx_of(clock)
    clock.apply(tx.on_response(response(tx.request, 180)))
    clock.run()
    assert clock.at(60.0) == [Timeout(), StartTimer("B", 8.0)]
    assert clock.at(68.0) == [Terminated()]


def test_error_final_is_acked_per_17_1_1_3() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.advance(0.7)
    busy = response(tx.request, 486, to_tag="callee-tag")
    effects = clock.apply(tx.on_response(busy))
    assert effects[0] == PassToTU(busy)
    assert effects[2:] == [CancelTimer("A"), CancelTimer("B"), StartTimer("D", 32.0)]
    assert isinstance(effects[1], Send)
    ack = effects[1].message
    assert isinstance(ack, Request)
    invite = tx.request
    assert ack.method == "ACK"
    assert str(ack.uri) == str(invite.uri)
    assert ack.call_id == invite.call_id
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.headers.get("To") == busy.headers.get("To")
    assert ack.to.tag == "callee-tag"
    assert ack.cseq == (invite.cseq[0], "ACK")
    assert ack.headers.get_all("Via") == [invite.headers.get_all("Via")[0]]
    assert ack.vias[0].branch == invite.vias[0].branch
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert ack.max_forwards == 69
    assert "Contact" not in ack.headers
    assert ack.body == b""
    assert b"Content-Length: 0" in ack.serialise()
    assert tx.state == "completed"


def test_build_ack_without_route_or_max_forwards() -> None:
    invite = request("INVITE")
    invite.headers.remove("Route")
    invite.headers.remove("Max-Forwards")
    ack = build_ack(invite, response(invite, 603))
    assert "Route" not in ack.headers
    assert ack.headers.get("Max-Forwards") == "70"


def test_retransmitted_error_final_is_reacked_until_d() -> None:
    clock = started()
    tx = tx_of(clock)
    busy = response(tx.request, 486)
    clock.apply(tx.on_response(response(tx.request, 180)))
    clock.apply(tx.on_response(busy))
    assert tx.ack is not None
    for when in (0.5, 1.5, 3.5):
        clock.advance(when)
        assert clock.apply(tx.on_response(busy)) == [Send(tx.ack)]
    # Other answers in Completed are ignored.
    assert clock.apply(tx.on_response(response(tx.request, 200))) == []
    assert clock.apply(tx.on_response(response(tx.request, 180))) == []
    clock.run()
    assert [t for t, _ in sent_acks(clock)] == [0, 0.5, 1.5, 3.5]
    assert len({id(a) for _, a in sent_acks(clock)}) == 1
    assert clock.at(32.0) == [Terminated()]


def test_reliable_error_final_acks_and_terminates_at_once() -> None:
    clock = started(reliable=True)
    tx = tx_of(clock)
    effects = clock.apply(tx.on_response(response(tx.request, 404)))
    assert [type(e) for e in effects] == [PassToTU, Send, CancelTimer, Terminated]
    assert effects[2] == CancelTimer("B")


def test_2xx_goes_to_accepted_and_passes_every_2xx_up() -> None:
    clock = started()
    tx = tx_of(clock)
    clock.apply(tx.on_response(response(tx.request, 180)))
    ok = response(tx.request, 200)
    assert clock.apply(tx.on_response(ok)) == [
        PassToTU(ok),
        CancelTimer("C"),
        StartTimer("M", 32.0),
    ]
    assert tx.state == "accepted"
    forked = response(tx.request, 200, to_tag="other-branch")
    assert clock.apply(tx.on_response(forked)) == [PassToTU(forked)]
    assert clock.apply(tx.on_response(response(tx.request, 486))) == []
    assert clock.apply(tx.on_response(response(tx.request, 180))) == []
    clock.run()
    assert clock.at(32.0) == [Terminated()]
    assert sent_acks(clock) == []  # the ACK for a 2xx is not ours


def test_2xx_in_calling_cancels_a_and_b() -> None:
    clock = started()
    tx = tx_of(clock)
    ok = response(tx.request, 200)
    assert clock.apply(tx.on_response(ok)) == [
        PassToTU(ok),
        CancelTimer("A"),
        CancelTimer("B"),
        StartTimer("M", 32.0),
    ]


def test_transport_error() -> None:
    clock = started()
    tx = tx_of(clock)
    assert clock.apply(tx.on_transport_error()) == [
        TransportFailed(),
        CancelTimer("A"),
        CancelTimer("B"),
        Terminated(),
    ]
    assert tx.on_transport_error() == []
    assert tx.on_response(response(tx.request, 200)) == []


def test_unexpected_are_ignored() -> None:
    clock = started()
    tx = tx_of(clock)
    for name in ("C", "D", "M", "K", "nonsense"):
        assert tx.on_timer(name) == []
    assert tx.state == "calling"
    assert tx.armed_timers == ("A", "B")

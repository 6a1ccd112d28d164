"""SipStack without sockets: fake transports record what it sends, a virtual
clock runs its timers (tests.fakes). One behaviour of the glue per test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.fakes import ALICE, LOCAL, FakeTransports, ack_for, request, settle, virtual

from sipsilo.flow import Flow, Target
from sipsilo.sip.message import Request
from sipsilo.sip.uri import SipUri
from sipsilo.stack.core import SipStack
from sipsilo.stack.handles import ServerTransaction
from sipsilo.transaction.timers import TimerConfig
from sipsilo.transport.udp import DatagramTooLarge

BOB = Target("udp", "203.0.113.5", 5060)


def make(
    on_request: Callable[[ServerTransaction], Awaitable[None] | None] | None = None,
    **kw: Any,
) -> tuple[SipStack, FakeTransports, list[ServerTransaction]]:
    fake = FakeTransports()
    seen: list[ServerTransaction] = []

    def record(tx: ServerTransaction) -> Awaitable[None] | None:
        seen.append(tx)
        return on_request(tx) if on_request is not None else None

    stack = SipStack(fake.attach, TimerConfig(), record, **kw)
    return stack, fake, seen


@virtual
async def test_a_request_goes_up_once_and_its_answer_back_along_the_flow() -> None:
    stack, fake, seen = make()
    stack.receive(request(), ALICE)
    await settle()
    assert len(seen) == 1 and seen[0].request.method == "MESSAGE"
    # the edge wrote the real source into the top Via
    assert seen[0].request.top_via.received == "198.51.100.7"
    seen[0].reply(202, "Accepted")
    assert fake.statuses() == [202]
    assert fake.sent[0].to == ALICE


@virtual
async def test_retransmissions_are_absorbed_then_answered_from_the_completed_table() -> None:
    stack, fake, seen = make()
    stack.receive(request(), ALICE)
    await settle()
    stack.receive(request(), ALICE)  # while the route works: absorbed
    await settle()
    assert len(seen) == 1 and fake.sent == []
    seen[0].reply(200)
    stack.receive(request(), ALICE)  # after the final: the same bytes again
    await settle()
    assert len(seen) == 1
    assert fake.statuses() == [200, 200]
    assert fake.sent[0].message.serialise() == fake.sent[1].message.serialise()
    assert stack.counters["retransmissions"] == 2


@virtual
async def test_the_completed_entry_lingers_64_t1_then_the_request_is_new() -> None:
    stack, _fake, seen = make()
    stack.receive(request(), ALICE)
    await settle()
    seen[0].reply(200)
    await settle(31.0)
    stack.receive(request(), ALICE)
    await settle()
    assert len(seen) == 1  # timer J (32 s) still running
    await settle(3.0)
    assert stack.live_transactions == 0
    stack.receive(request(), ALICE)
    await settle()
    assert len(seen) == 2


@virtual
async def test_an_exception_in_the_route_is_answered_500() -> None:
    async def boom(tx: ServerTransaction) -> None:
        raise RuntimeError("route bug")

    stack, fake, _seen = make(boom)
    stack.receive(request(), ALICE)
    await settle()
    [answer] = fake.responses()
    assert (answer.status, answer.reason) == (500, "Server Internal Error")


@virtual
async def test_an_exception_after_the_answer_sends_nothing_more() -> None:
    async def late_boom(tx: ServerTransaction) -> None:
        tx.reply(202, "Accepted")
        raise RuntimeError("after the answer")

    stack, fake, _ = make(late_boom)
    stack.receive(request(), ALICE)
    await settle()
    assert fake.statuses() == [202]


@virtual
async def test_an_unparsable_request_gets_the_parsers_status() -> None:
    stack, fake, seen = make()
    broken = request().replace(b"CSeq: 1 MESSAGE\r\n", b"CSeq: one MESSAGE\r\n")
    stack.receive(broken, ALICE)
    await settle()
    assert seen == []
    assert fake.statuses() == [400]
    assert stack.counters["rx_errors"] == 1


@virtual
async def test_invite_gets_100_at_once_and_a_failure_is_retransmitted_until_acked() -> None:
    stack, fake, seen = make()
    invite = request("INVITE")
    stack.receive(invite, ALICE)
    await settle()
    assert fake.statuses() == [100]
    seen[0].reply(486, "Busy Here")
    await settle(0.5)  # timer G: T1
    await settle(1.0)  # then 2*T1
    assert fake.statuses() == [100, 486, 486, 486]
    stack.receive(ack_for(invite, fake.responses()[-1]), ALICE)
    await settle(10.0)
    assert fake.statuses() == [100, 486, 486, 486]  # ACKed: no more
    assert len(seen) == 1  # the ACK did not go to the route


@virtual
async def test_drop_absorbs_retransmissions_without_an_answer() -> None:
    stack, fake, seen = make()
    stack.receive(request(), ALICE)
    await settle()
    stack.drop(seen[0].key)
    stack.receive(request(), ALICE)
    await settle()
    assert fake.sent == [] and len(seen) == 1


@virtual
async def test_stray_ack_and_stray_response_go_to_their_handlers() -> None:
    acks: list[Any] = []
    strays: list[Any] = []

    async def on_ack(ack: Any, flow: Flow) -> None:
        acks.append(ack)

    async def on_stray(resp: Any, flow: Flow) -> None:
        strays.append(resp)

    stack, fake, seen = make(on_stray_ack=on_ack, on_stray_response=on_stray)
    stack.receive(request("ACK", to_tag="b1"), ALICE)
    response = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnotours\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: x\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    stack.receive(response, ALICE)
    await settle()
    assert [a.method for a in acks] == ["ACK"] and [r.status for r in strays] == [200]
    assert seen == [] and fake.sent == []


@virtual
async def test_send_request_returns_the_final_and_passes_provisionals() -> None:
    stack, fake, _ = make()
    provisional: list[int] = []
    out = to_bob()
    pending = asyncio.ensure_future(
        stack.send_request(out, BOB, on_provisional=lambda r: provisional.append(r.status)))
    await settle()
    [sent] = fake.requests("MESSAGE")
    assert sent.top_via.branch.startswith("z9hG4bK") and sent.top_via.host == LOCAL[0]
    fake.answer(sent, 180)
    fake.answer(sent, 200)
    response = await pending
    assert (response.status, provisional) == (200, [180])


@virtual
async def test_no_answer_retransmits_on_timer_e_then_gives_a_synthetic_408() -> None:
    stack, fake, _ = make()
    response = await stack.send_request(to_bob(), BOB)
    assert (response.status, response.reason) == (408, "Request Timeout")
    sends = [s.at - fake.sent[0].at for s in fake.sent]
    # E doubles from T1 up to T2 (4 s); F gives up after fr_timer (32 s)
    assert sends[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert sends[-1] < 32.0 and len(sends) == 11


@virtual
async def test_a_transport_failure_is_a_503_and_an_oversized_datagram_a_513() -> None:
    stack, fake, _ = make()
    fake.fail = ConnectionRefusedError("refused")
    assert (await stack.send_request(to_bob(), BOB)).status == 503
    fake.fail = DatagramTooLarge("too big")
    assert (await stack.send_request(to_bob(), BOB)).status == 513


@virtual
async def test_a_closed_connection_fails_its_waiting_requests_at_once() -> None:
    stack, fake, _ = make()
    tcp = Target("tcp", "203.0.113.5", 5060)
    pending = asyncio.ensure_future(stack.send_request(to_bob(), tcp))
    await settle()
    [sent] = fake.sent
    assert isinstance(sent.to, Target)
    stack.connection_closed(1)  # the fake numbers connections from 1
    response = await pending
    assert response.status == 503
    assert asyncio.get_running_loop().time() - sent.at == 0.0


@virtual
async def test_branch_token_and_tag_name_our_branches() -> None:
    stack, fake, _ = make(branch_token="tok", branch_tag="0a")
    stack.start_request(to_bob(), BOB)
    await settle()
    [sent] = fake.requests()
    assert stack.branch_token == "tok"
    assert stack.loops_back(sent)  # the same request back here is a loop


def to_bob() -> Request:
    """A request we originate: no Via yet, the stack adds its own."""
    req = Request("MESSAGE", SipUri.parse("sip:bob@203.0.113.5"))
    for name, value in (("Max-Forwards", "70"), ("From", "<sip:alice@192.0.2.1>;tag=a1"),
                        ("To", "<sip:bob@203.0.113.5>"), ("Call-ID", "out-1@192.0.2.1"),
                        ("CSeq", "1 MESSAGE"), ("Content-Length", "0")):
        req.headers.add(name, value)
    return req

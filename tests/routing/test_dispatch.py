"""Dispatcher and RouteContext without sockets: a real stack on fake transports
(tests.fakes), a route written per test. What no route decides: CANCEL, loops,
a route that answers nothing or fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.fakes import ALICE, LOCAL, FakeTransports, request, settle, virtual

from sipsilo.config import Config
from sipsilo.metrics import Counters
from sipsilo.proxy.relay import Relay
from sipsilo.registrar.location import MemoryLocationService
from sipsilo.registrar.registrar import Registrar
from sipsilo.routing.context import RouteContext
from sipsilo.routing.dispatch import Dispatcher
from sipsilo.routing.services import Services
from sipsilo.sip.ids import loop_branch
from sipsilo.stack.core import SipStack
from sipsilo.transaction.timers import TimerConfig

Route = Callable[[RouteContext], Awaitable[None]]


class World:
    """Stack, services and dispatcher wired as app.Server wires them."""

    def __init__(self, route: Route) -> None:
        self.fake = FakeTransports()
        self.contexts: list[RouteContext] = []

        async def recording(ctx: RouteContext) -> None:
            self.contexts.append(ctx)
            await route(ctx)

        self.stack = SipStack(
            self.fake.attach, TimerConfig(), lambda tx: self.dispatcher.on_request(tx),
            on_stray_ack=lambda a, f: self.dispatcher.on_stray_ack(a, f),
            on_stray_response=lambda r, f: self.dispatcher.on_stray_response(r, f),
        )
        location = MemoryLocationService()
        self.services = Services(
            config=Config(), stack=self.stack,
            registrar=Registrar(location, 3600, 60, 86400), location=location,
            store=None, delivery=None, relay=Relay(self.stack),  # type: ignore[arg-type]
            counters=Counters(), server_header=None, domains={"192.0.2.1"},
            listen_ports={LOCAL[1]},
        )
        self.dispatcher = Dispatcher(self.services, recording)


async def answer_202(ctx: RouteContext) -> None:
    ctx.t_reply(202, "Accepted")


@virtual
async def test_the_route_answers_through_its_context_once() -> None:
    async def twice(ctx: RouteContext) -> None:
        assert ctx.t_reply(202, "Accepted") is True
        assert ctx.t_reply(500) is False  # a transaction has one final answer
        assert ctx.replied

    w = World(twice)
    w.stack.receive(request(), ALICE)
    await settle()
    assert w.fake.statuses() == [202]


@virtual
async def test_a_route_that_returns_without_a_final_answer_gets_500() -> None:
    async def ring_only(ctx: RouteContext) -> None:
        ctx.t_reply(180, "Ringing")  # a provisional is no answer

    w = World(ring_only)
    w.stack.receive(request("INVITE"), ALICE)
    await settle()
    assert w.fake.statuses() == [100, 180, 500]
    assert w.fake.responses()[-1].reason == "Server Internal Error - request not handled"


@virtual
async def test_a_dropped_request_gets_no_answer_and_its_retransmission_none_either() -> None:
    async def drop(ctx: RouteContext) -> None:
        ctx.drop()

    w = World(drop)
    w.stack.receive(request(), ALICE)
    await settle()
    w.stack.receive(request(), ALICE)
    await settle()
    assert w.fake.sent == [] and len(w.contexts) == 1


@virtual
async def test_a_malformed_header_read_by_the_route_is_the_clients_error() -> None:
    async def reads_route(ctx: RouteContext) -> None:
        ctx.loose_route()  # parses Route: broken here

    w = World(reads_route)
    w.stack.receive(request(extra="Route: <sip:p1.example.com;lr\r\n"), ALICE)
    await settle()
    [answer] = w.fake.responses()
    assert answer.status == 400 and len(w.contexts) == 1  # the route did run


@virtual
async def test_an_initial_request_carrying_our_branch_for_this_uri_is_a_loop_482() -> None:
    w = World(answer_202)
    ours = loop_branch(w.stack.branch_token, "sip:bob@192.0.2.1")
    looped = request(extra=f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={ours}\r\n")
    w.stack.receive(looped, ALICE)
    await settle()
    assert w.fake.statuses() == [482] and w.contexts == []
    # the same branch for another Request-URI is spiral, not a loop
    other = request(uri="sip:carol@192.0.2.1", branch="z9hG4bKalice2",
                    extra=f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={ours}\r\n")
    w.stack.receive(other, ALICE)
    await settle()
    assert w.fake.statuses() == [482, 202]


@virtual
async def test_our_sent_by_twice_is_a_loop_but_not_inside_a_dialog() -> None:
    twice = ("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx1\r\n"
             "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx2\r\n")

    w = World(answer_202)
    w.stack.receive(request(extra=twice), ALICE)
    w.stack.receive(request("BYE", branch="z9hG4bKbye", to_tag="b1", extra=twice), ALICE)
    await settle()
    assert w.fake.statuses() == [482, 202]


@virtual
async def test_cancel_without_its_invite_is_481() -> None:
    w = World(answer_202)
    w.stack.receive(request("CANCEL"), ALICE)
    await settle()
    [answer] = w.fake.responses()
    assert (answer.status, answer.reason) == (481, "Call/Transaction Does Not Exist")
    assert w.contexts == []  # CANCEL never reaches the route


@virtual
async def test_cancel_matches_its_pending_invite_200_then_487() -> None:
    parked = asyncio.Event()

    async def park(ctx: RouteContext) -> None:
        await parked.wait()  # e.g. awaiting a database

    w = World(park)
    w.stack.receive(request("INVITE"), ALICE)
    await settle()
    w.stack.receive(request("CANCEL", branch="z9hG4bKother"), ALICE)  # another branch
    await settle()
    w.stack.receive(request("CANCEL"), ALICE)  # the INVITE's own branch
    await settle()
    statuses = [(r.status, r.cseq[1]) for r in w.fake.responses()]
    assert statuses == [(100, "INVITE"), (481, "CANCEL"), (200, "CANCEL"),
                        (487, "INVITE")]
    parked.set()
    await settle()
    assert len(w.fake.responses()) == 4  # the route's late return adds nothing


@virtual
async def test_a_stray_ack_not_along_our_record_route_is_not_forwarded() -> None:
    w = World(answer_202)
    w.stack.receive(request("ACK", to_tag="b1",
                            extra="Route: <sip:192.0.2.1;lr>, <sip:203.0.113.9;lr>\r\n"),
                    ALICE)
    await settle()
    assert w.fake.sent == [] and w.contexts == []


@virtual
async def test_a_stray_2xx_for_a_branch_we_never_made_is_dropped() -> None:
    forged = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKforged\r\n"
        b"Via: SIP/2.0/UDP 203.0.113.66:5060;branch=z9hG4bKvictim\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: f\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )

    w = World(answer_202)
    w.stack.receive(forged, ALICE)
    await settle()
    assert w.fake.sent == []  # not reflected to the second Via


@virtual
async def test_max_forwards_zero_is_seen_by_the_route() -> None:
    async def maxfwd(ctx: RouteContext) -> None:
        if not ctx.mf_process_maxfwd_header(10):
            ctx.t_reply(483, "Too Many Hops")
            return
        ctx.t_reply(202)

    w = World(maxfwd)
    w.stack.receive(request().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), ALICE)
    w.stack.receive(request(branch="z9hG4bKnext", cseq=2), ALICE)
    await settle()
    assert sorted(w.fake.statuses()) == [202, 483]



class _Delivery:
    """Nothing is being dumped in this process."""

    owner = "inst0/w1"

    def busy(self, username: str, domain: str) -> bool:
        return False


class _Store:
    """A silo in which another process is delivering bob's messages."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

    async def pending_elsewhere(self, username: str, domain: str, owner: str, now: int) -> bool:
        self.asked.append((username, domain, owner))
        return username == "bob"


async def _pending_or_live(ctx: RouteContext) -> None:
    if await ctx.m_pending():
        ctx.t_reply(202, "Accepted")  # the seed route would m_store here
    else:
        ctx.t_reply(200, "OK")


def _world_with_silo(workers: int) -> tuple[World, _Store]:
    w = World(_pending_or_live)
    store = _Store()
    w.services.config = Config.model_validate({"server": {"workers": workers}})
    w.services.store = store  # type: ignore[assignment]
    w.services.delivery = _Delivery()  # type: ignore[assignment]
    return w, store


@virtual
async def test_with_workers_a_live_message_queues_behind_a_dump_in_another_worker() -> None:
    # bob's connection (and his dump) is at worker 0; this MESSAGE reached
    # worker 1. Relaying it would overtake the messages worker 0 is sending.
    w, store = _world_with_silo(workers=2)
    w.stack.receive(request(), ALICE)
    await settle()
    assert w.fake.statuses() == [202]
    assert store.asked == [("bob", "192.0.2.1", "inst0/w1")]


@virtual
async def test_one_process_does_not_ask_the_database_before_a_live_message() -> None:
    w, store = _world_with_silo(workers=1)
    w.stack.receive(request(), ALICE)
    await settle()
    assert w.fake.statuses() == [200] and store.asked == []

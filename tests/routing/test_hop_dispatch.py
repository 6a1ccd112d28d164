"""Requests on the private hop listener (routing.handover) through the
dispatcher, without sockets: only signed hand-overs and their CANCELs are
taken; anything else is refused 403 and its connection judged unsigned
(closed when nothing signed came over it before: transport.tcp)."""

from __future__ import annotations

from tests.fakes import request, settle, virtual
from tests.routing.test_dispatch import World, answer_202

from sipsilo.flow import Flow
from sipsilo.routing.handover import FlowOwner

SECRET = b"h" * 32
HOP = ("127.0.0.1", 41001)
STRANGER = Flow("tcp", HOP, ("127.0.0.1", 50001), conn_id=7)
BOB = Flow("tcp", ("192.0.2.1", 5060), ("198.51.100.9", 40000), conn_id=3)


def _world() -> World:
    w = World(answer_202)
    w.services.handover = FlowOwner(SECRET)
    w.services.handover.listen(*HOP)
    return w


def _signed_route(branch: str = "z9hG4bKalice1") -> str:
    """The Route entry another worker puts on a request for BOB's flow that
    leaves it with *branch* (tests.fakes.request's by default)."""
    other = FlowOwner(SECRET)
    other.listen("127.0.0.1", 41002)
    owner = FlowOwner(SECRET)
    owner.listen(*HOP)
    target = other.target(owner.stamp(BOB))
    assert target is not None and callable(target.route)
    return target.route(branch)


@virtual
async def test_an_unsigned_request_on_the_hop_is_refused_and_never_routed() -> None:
    w = _world()
    w.stack.receive(request("REGISTER", "sip:192.0.2.1"), STRANGER)
    forged = _signed_route("z9hG4bKx2")[:-3] + "0>"
    w.stack.receive(request(branch="z9hG4bKx2", extra=f"Route: {forged}\r\n"), STRANGER)
    w.stack.receive(request("CANCEL", branch="z9hG4bKx3"), STRANGER)
    await settle()
    assert w.fake.statuses() == [403, 403, 403] and w.contexts == []
    assert w.fake.tcp.hop_requests == [(7, False)] * 3


@virtual
async def test_a_signed_hand_over_proves_the_connection() -> None:
    w = _world()
    w.stack.receive(request(extra=f"Route: {_signed_route()}\r\n"), STRANGER)
    await settle()
    # bob's connection is gone here: 430, but the request was a peer's
    assert w.fake.statuses() == [430] and w.contexts == []
    assert w.fake.tcp.hop_requests == [(7, True)]


@virtual
async def test_off_the_hop_listener_requests_are_routed_as_before() -> None:
    w = _world()
    w.stack.receive(request(), Flow("tcp", ("192.0.2.1", 5060), ("127.0.0.1", 50002), 8))
    await settle()
    assert w.fake.statuses() == [202] and w.fake.tcp.hop_requests == []

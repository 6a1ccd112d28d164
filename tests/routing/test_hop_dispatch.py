"""Requests on the private hop listener (routing.handover) through the
dispatcher, without sockets: only signed hand-overs and their CANCELs are
taken; anything else is refused 403 and its connection judged unsigned
(closed when nothing signed came over it before: transport.tcp)."""

from __future__ import annotations

from tests.fakes import request, settle, virtual
from tests.routing.test_dispatch import World, answer_202

from sipsilo.flow import Flow
from sipsilo.registrar.binding import Binding
from sipsilo.routing.handover import FlowOwner
from sipsilo.sip.message import Request
from sipsilo.sip.parser import parse_message

SECRET = b"h" * 32
HOP = ("127.0.0.1", 41001)
STRANGER = Flow("tcp", HOP, ("127.0.0.1", 50001), conn_id=7)
BOB = Flow("tcp", ("192.0.2.1", 5060), ("198.51.100.9", 40000), conn_id=3)


def _world() -> World:
    w = World(answer_202)
    w.services.handover = FlowOwner(SECRET)
    w.services.handover.listen(*HOP)
    return w


def _signed(branch: str = "z9hG4bKalice1") -> bytes:
    """A request for BOB's flow as another worker sends it to us: its Route
    entry signed for it (tests.fakes.request's, with *branch*)."""
    other = FlowOwner(SECRET)
    other.listen("127.0.0.1", 41002)
    owner = FlowOwner(SECRET)
    owner.listen(*HOP)
    target = other.target(owner.stamp(BOB))
    assert target is not None and callable(target.route)
    req = parse_message(request(branch=branch))
    assert isinstance(req, Request)
    req.headers.prepend("Route", target.route(req))
    return req.serialise()


@virtual
async def test_an_unsigned_request_on_the_hop_is_refused_and_never_routed() -> None:
    w = _world()
    w.stack.receive(request("REGISTER", "sip:192.0.2.1"), STRANGER)
    signed = _signed("z9hG4bKx2")
    at = signed.index(b">")  # the signature's last digit, changed
    w.stack.receive(signed[:at - 1] + (b"0" if signed[at - 1:at] != b"0" else b"1")
                    + signed[at:], STRANGER)
    w.stack.receive(request("CANCEL", branch="z9hG4bKx3"), STRANGER)
    await settle()
    assert w.fake.statuses() == [403, 403, 403] and w.contexts == []
    assert w.fake.tcp.hop_requests == [(7, False)] * 3


@virtual
async def test_a_signed_hand_over_proves_the_connection() -> None:
    w = _world()
    w.stack.receive(_signed(), STRANGER)
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


# ------------------------------------------------ connection ids are per process
def _binding(flow: Flow) -> Binding:
    return Binding(aor="sip:bob@192.0.2.1", contact="sip:bob@198.51.100.9:40000;transport=tcp",
                   params=(),
                   expires_at=4e9, call_id="c", cseq=1, flow=flow)


@virtual
async def test_a_flow_naming_a_connection_id_is_sent_over_it_only_while_it_goes_to_that_peer(
        ) -> None:
    """Connection ids are counted in each process: bob's flow, kept by another
    worker (or an earlier process) without its owner, may name an id that here
    is carol's connection. Bob's messages must never go over carol's
    connection: only over the connection to bob's own address."""
    w = _world()
    carol = ("198.51.100.20", 41000)
    w.fake.tcp.open[BOB.conn_id or 0] = carol
    target = await w.services.target_for_binding(_binding(BOB))
    # Not over carol's connection: to bob's Contact, as without the connection.
    assert target is not None and target.conn_id is None
    assert (target.host, target.port) == BOB.remote
    w.fake.tcp.open[BOB.conn_id or 0] = BOB.remote
    target = await w.services.target_for_binding(_binding(BOB))
    assert target is not None and target.conn_id == BOB.conn_id

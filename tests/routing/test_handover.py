"""The flow owner hand-over (routing.handover), without sockets: what a
sending worker puts on the request and what the owning worker accepts."""

from __future__ import annotations

import pytest
from tests.fakes import request

from sipsilo.flow import Flow, Target
from sipsilo.routing.handover import MAX_AGE, BadHandover, FlowOwner, StaleFlow
from sipsilo.sip.message import Request
from sipsilo.sip.parser import parse_message

SECRET = b"s" * 32
NOW = 1_800_000_000.0
BOB_TCP = Flow("tcp", ("127.0.0.1", 5060), ("198.51.100.9", 40000), conn_id=17)
OWNER = ("127.0.0.1", 41001)


def _owner(clock: float = NOW) -> FlowOwner:
    owner = FlowOwner(SECRET, clock=lambda: clock)
    owner.listen(*OWNER)
    return owner


def _sender() -> FlowOwner:
    sender = FlowOwner(SECRET, clock=lambda: NOW)
    sender.listen("127.0.0.1", 41002)
    return sender


BRANCH = "z9hG4bKhop1"  # the Via the sending worker put on top


def _bare(branch: str = BRANCH, method: str = "MESSAGE", extra: str = "") -> Request:
    message = parse_message(request(method, "sip:bob@198.51.100.9:40000;transport=tcp",
                                    branch=branch, extra=extra))
    assert isinstance(message, Request)
    return message


def _route(target: Target | None, branch: str = BRANCH, method: str = "MESSAGE") -> str:
    """The Route entry the stack puts on the request that leaves with *branch*."""
    assert target is not None and target.route is not None
    route = target.route
    return route if isinstance(route, str) else route(_bare(branch, method))


def _handed(route: str | None, branch: str = BRANCH, method: str = "MESSAGE") -> Request:
    return _bare(branch, method, f"Route: {route}\r\n" if route else "")


def test_one_process_stamps_nothing_and_hands_nothing_over() -> None:
    alone = FlowOwner(SECRET)
    assert alone.stamp(BOB_TCP) is BOB_TCP
    assert not alone.elsewhere(BOB_TCP)


def test_a_stream_flow_names_its_owner_udp_stays_anyones() -> None:
    owner = _owner()
    stamped = owner.stamp(BOB_TCP)
    assert stamped.owner == "sip:127.0.0.1:41001;transport=tcp"
    assert not owner.elsewhere(stamped)
    udp = Flow("udp", ("127.0.0.1", 5060), ("198.51.100.9", 5062))
    assert owner.stamp(udp) is udp
    assert _sender().elsewhere(stamped)


def test_the_owner_takes_a_request_routed_to_it_and_finds_the_flow() -> None:
    target = _sender().target(_owner().stamp(BOB_TCP))
    assert target is not None and (target.transport, target.host, target.port) == \
        ("tcp", *OWNER)
    assert _route(target).startswith("<sip:127.0.0.1:41001;transport=tcp;lr;flow=")
    req = _handed(_route(target))
    taken = _owner().taken(req, OWNER)
    assert taken == Target("tcp", "198.51.100.9", 40000, conn_id=17)
    assert req.headers.get("Route") is None  # taken off before it goes on


def test_requests_without_a_flow_route_are_no_hand_over() -> None:
    assert _owner().taken(_handed(None), OWNER) is None
    assert _owner().taken(_handed("<sip:127.0.0.1:41001;lr>"), OWNER) is None
    # a flow entry for another owner is not ours to take
    other = _sender().target(_sender().stamp(BOB_TCP))
    assert _owner().taken(_handed(_route(other)), OWNER) is None


@pytest.mark.parametrize("tamper", [
    lambda r: r.replace("flow=", "flow=x"),             # another flow, same signature
    lambda r: r[:-3] + ("0" if r[-3] != "0" else "1") + r[-2:],  # signature changed
])
def test_a_forged_flow_entry_is_refused(tamper: object) -> None:
    target = _sender().target(_owner().stamp(BOB_TCP))
    assert callable(tamper)
    with pytest.raises(BadHandover):
        _owner().taken(_handed(tamper(_route(target))), OWNER)


def test_a_seen_flow_entry_cannot_be_replayed_on_another_request() -> None:
    """Someone who watches a hand-over go by between instances has its Route
    entry: on a request of theirs (another branch, Call-ID, method or body) it
    does not check; an old one does not either."""
    seen = _route(_sender().target(_owner().stamp(BOB_TCP)))
    assert _owner().taken(_handed(seen), OWNER) is not None
    forged = [
        _handed(seen, "z9hG4bKforged"),
        _handed(seen, method="INFO"),
        _with(seen, call_id="other@x"),
        _with(seen, body=b"send me your password"),
    ]
    for req in forged:
        with pytest.raises(BadHandover):
            _owner().taken(req, OWNER)
    with pytest.raises(BadHandover, match="ago"):
        _owner(NOW + MAX_AGE + 1).taken(_handed(seen), OWNER)
    assert _owner(NOW + MAX_AGE - 1).taken(_handed(seen), OWNER) is not None


def _with(route: str, *, call_id: str | None = None, body: bytes | None = None) -> Request:
    req = _handed(route)
    if call_id is not None:
        req.call_id = call_id
    if body is not None:
        req.body = body
    return parse_message(req.serialise())  # type: ignore[return-value]


def test_another_secret_cannot_sign_for_us() -> None:
    stranger = FlowOwner(b"x" * 32)
    stranger.listen("127.0.0.1", 41002)
    target = stranger.target(_owner().stamp(BOB_TCP))
    with pytest.raises(BadHandover):
        _owner().taken(_handed(_route(target)), OWNER)


def test_a_flow_entry_on_a_public_listener_is_refused() -> None:
    target = _sender().target(_owner().stamp(BOB_TCP))
    with pytest.raises(BadHandover):
        _owner().taken(_handed(_route(target)), ("127.0.0.1", 5060))


def test_between_instances_the_owner_uri_names_the_process() -> None:
    """A fixed hop address outlives a process: a flow signed for an earlier one
    on it is stale (430), never written to a new connection."""
    earlier = FlowOwner(SECRET, clock=lambda: NOW)
    earlier.listen("10.0.0.1", 5070, tag="aaaa")
    now = FlowOwner(SECRET, clock=lambda: NOW)
    now.listen("10.0.0.1", 5070, tag="bbbb")
    stamped = earlier.stamp(BOB_TCP)
    assert stamped.owner == "sip:10.0.0.1:5070;transport=tcp;o=aaaa"
    assert now.elsewhere(stamped)
    target = _sender().target(stamped)
    assert target is not None and (target.host, target.port) == ("10.0.0.1", 5070)
    with pytest.raises(StaleFlow):
        now.taken(_handed(_route(target)), ("10.0.0.1", 5070))
    taken = earlier.taken(_handed(_route(target)), ("10.0.0.1", 5070))
    assert taken == Target("tcp", "198.51.100.9", 40000, conn_id=17)


def test_the_cancel_of_a_handed_over_invite_checks_too() -> None:
    """§9.1: the CANCEL copies the INVITE's top Via and Route, so the entry
    signed for the INVITE is good for its CANCEL (no body to compare)."""
    from sipsilo.proxy.relay import cancel_for

    route = _route(_sender().target(_owner().stamp(BOB_TCP)), "z9hG4bKinv1", "INVITE")
    invite = _handed(route, "z9hG4bKinv1", "INVITE")
    assert _owner().taken(_handed(route, "z9hG4bKinv1", "INVITE"), OWNER) is not None
    cancel = parse_message(cancel_for(invite).serialise())
    assert isinstance(cancel, Request)
    assert _owner().taken(cancel, OWNER) == Target("tcp", "198.51.100.9", 40000, conn_id=17)

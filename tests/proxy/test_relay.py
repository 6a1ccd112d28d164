"""Relay (RFC 3261 §16) without sockets: a real stack on fake transports and a
virtual clock (tests.fakes); the downstream phones answer from ``peer``.

The caller's request comes in from ALICE; each test relays it over its
branches and reads what went upstream (to ALICE) and downstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sipsilo.flow import Flow, Target
from sipsilo.proxy.relay import Branch, Relay, best_response
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri
from sipsilo.stack.core import SipStack
from sipsilo.stack.handles import ServerTransaction
from sipsilo.transaction.timers import TimerConfig
from tests.fakes import ALICE, LOCAL, FakeTransports, request, settle, virtual

PHONE1 = Target("udp", "203.0.113.5", 5060)
PHONE2 = Target("udp", "203.0.113.6", 5060)
# What a phone does with each request it gets: (status, after seconds) or None.
Script = Callable[[Request], list[tuple[int, float]]]


class Proxy:
    def __init__(self, branches: list[Branch], *, failure: bool = False,
                 record_route: str | None = None, timers: TimerConfig | None = None) -> None:
        self.fake = FakeTransports()
        self.stack = SipStack(self.fake.attach, timers or TimerConfig(), self.on_request)
        self.relay = Relay(self.stack)
        self.branches = branches
        self.record_route = record_route
        self.failed: list[int] = []
        self.failure = self._failure if failure else None
        self.tx: ServerTransaction | None = None
        self.scripts: dict[tuple[str, int], Script] = {}
        self.fake.peer = self._peer

    async def on_request(self, tx: ServerTransaction) -> None:
        self.tx = tx
        await self.relay.relay(tx, tx.request, self.branches,
                               record_route=self.record_route, failure=self.failure)

    async def _failure(self, best: Response) -> None:
        self.failed.append(best.status)
        if best.status == 486:
            assert self.tx is not None
            self.tx.reply(202, "Stored")  # what the seed's failure route does

    def phone(self, target: Target, script: Script) -> None:
        self.scripts[(target.host, target.port)] = script

    def _peer(self, message: Request | Response, to: Flow | Target) -> None:
        addr = (to.host, to.port) if isinstance(to, Target) else to.remote
        script = self.scripts.get(addr)
        if script is None or not isinstance(message, Request):
            return
        loop = asyncio.get_running_loop()
        for status, after in script(message):
            loop.call_later(after, self.fake.answer, message, status)

    # what went where
    def upstream(self) -> list[int]:
        """Statuses sent to the caller; a final's retransmissions (timer G) once."""
        out: list[int] = []
        for s in self.fake.sent:
            if s.to == ALICE and s.status is not None and out[-1:] != [s.status]:
                out.append(s.status)
        return out

    def downstream(self, target: Target, method: str | None = None) -> list[Request]:
        out = [s.message for s in self.fake.sent
               if isinstance(s.to, Target | Flow) and s.status is None
               and ((s.to.host, s.to.port) if isinstance(s.to, Target) else s.to.remote)
               == (target.host, target.port)]
        return [m for m in out if isinstance(m, Request) and method in (None, m.method)]


def to(target: Target) -> Branch:
    return Branch(SipUri.parse(f"sip:bob@{target.host}:{target.port}"), target)


def answers(*pairs: tuple[int, float]) -> Script:
    """Answer the first request of the script's method with these; nothing else."""
    def script(req: Request) -> list[tuple[int, float]]:
        return list(pairs) if req.method in ("INVITE", "MESSAGE") else []
    return script


def ringing(p: Proxy, *, after: float = 0.1, cancelled: tuple[int, int] = (200, 487)) -> Script:
    """A phone that rings (180 after ``after`` s) until CANCELled: the CANCEL gets
    ``cancelled[0]`` and the INVITE then ends with ``cancelled[1]``; a BYE gets 200."""

    def script(req: Request) -> list[tuple[int, float]]:
        if req.method == "CANCEL":
            invite = p.downstream(PHONE1, "INVITE")[0]
            asyncio.get_running_loop().call_later(0.01, p.fake.answer, invite, cancelled[1])
            return [(cancelled[0], 0.02)]
        return {"INVITE": [(180, after)], "BYE": [(200, 0.01)]}.get(req.method, [])

    return script


async def relayed(*scripts: Script, method: str = "MESSAGE", failure: bool = False) -> Proxy:
    """Relay one request to PHONE1 (and PHONE2), each answering by its script; 5 s later."""
    phones = [PHONE1, PHONE2][: len(scripts)]
    p = Proxy([to(t) for t in phones], failure=failure)
    for phone, script in zip(phones, scripts, strict=True):
        p.phone(phone, script)
    p.stack.receive(request(method), ALICE)
    await settle(5.0)
    return p


# --------------------------------------------------------- parallel (MESSAGE)
@virtual
async def test_parallel_first_2xx_goes_up_at_once_and_later_answers_do_not() -> None:
    p = await relayed(answers((486, 0.1)), answers((200, 0.2)))
    assert p.upstream() == [200]
    assert len(p.downstream(PHONE1)) == len(p.downstream(PHONE2)) == 1


@virtual
async def test_parallel_failures_the_best_answer_wins_and_503_goes_up_as_500() -> None:
    p = await relayed(answers((503, 0.1)), answers((404, 0.2)))
    assert p.upstream() == [404]  # class 4 beats class 5
    q = await relayed(answers((503, 0.1)))
    assert q.upstream() == [500]  # a downstream 503 would say *we* are down


@virtual
async def test_parallel_no_answer_within_fr_timer_is_408() -> None:
    p = Proxy([to(PHONE1)], timers=TimerConfig(fr_timer=10.0))
    p.stack.receive(request(), ALICE)
    await settle(9.0)
    assert p.upstream() == []
    await settle(1.5)
    assert p.upstream() == [408]
    # UDP: the branch was retransmitted meanwhile, on timer E
    assert len(p.downstream(PHONE1, "MESSAGE")) > 1


@virtual
async def test_a_failure_hook_may_answer_itself_or_let_the_best_go_up() -> None:
    p = await relayed(answers((486, 0.1)), failure=True)
    assert (p.failed, p.upstream()) == ([486], [202])
    q = await relayed(answers((404, 0.1)), failure=True)
    assert (q.failed, q.upstream()) == ([404], [404])


# ------------------------------------------------------------ serial (INVITE)
@virtual
async def test_serial_invite_tries_the_next_branch_after_a_failure() -> None:
    p = Proxy([to(PHONE1), to(PHONE2)], record_route="<sip:192.0.2.1;lr>")
    p.phone(PHONE1, answers((180, 0.1), (486, 0.5)))
    p.phone(PHONE2, answers((200, 0.1)))
    p.stack.receive(request("INVITE"), ALICE)
    await settle(5.0)
    assert p.upstream() == [100, 180, 200]
    [first] = p.downstream(PHONE1, "INVITE")
    [second] = p.downstream(PHONE2, "INVITE")
    assert first.max_forwards == 69
    assert first.headers.get_all("Record-Route") == ["<sip:192.0.2.1;lr>"]
    assert len(first.vias) == 2 and first.top_via.host == LOCAL[0]
    assert second.top_via.branch != first.top_via.branch
    assert p.downstream(PHONE1, "ACK")  # the 486 is ACKed hop by hop
    up = next(r for r in p.fake.responses() if r.status == 200)
    assert len(up.vias) == 1  # our Via taken off on the way up


@virtual
async def test_serial_a_6xx_ends_the_search() -> None:
    p = await relayed(answers((603, 0.1)), answers((200, 0.1)), method="INVITE")
    assert p.upstream() == [100, 603]
    assert p.downstream(PHONE2) == []


@virtual
async def test_timer_c_cancels_the_ringing_branch_and_answers_408() -> None:
    p = Proxy([to(PHONE1)], timers=TimerConfig(fr_inv_timer=20.0))
    p.phone(PHONE1, ringing(p))
    p.stack.receive(request("INVITE"), ALICE)
    await settle(19.0)
    assert p.upstream() == [100, 180]
    await settle(2.0)
    assert p.upstream() == [100, 180, 408]
    assert len(p.downstream(PHONE1, "CANCEL")) == 1
    assert p.downstream(PHONE1, "ACK")  # the 487 is ACKed


@virtual
async def test_cancel_waits_for_a_provisional_then_the_caller_gets_487() -> None:
    p = Proxy([to(PHONE1)])
    p.phone(PHONE1, ringing(p, after=2.0))
    p.stack.receive(request("INVITE"), ALICE)
    await settle(0.5)
    assert p.tx is not None
    cancelling = asyncio.ensure_future(p.relay.cancel(p.tx.key))
    await settle(1.0)
    assert p.downstream(PHONE1, "CANCEL") == []  # §9.1: not before a provisional
    await settle(2.0)
    assert await cancelling is True
    [cancel] = p.downstream(PHONE1, "CANCEL")
    assert cancel.top_via.branch == p.downstream(PHONE1, "INVITE")[0].top_via.branch
    assert p.upstream()[-1] == 487
    assert await p.relay.cancel(p.tx.key) is False  # the relay is over


# ---------------------------------------------------------- no branch to try
@virtual
async def test_a_branch_to_our_own_socket_is_skipped_all_skipped_is_482() -> None:
    ours = Target("udp", *LOCAL)
    p = Proxy([to(ours)])
    p.stack.receive(request(), ALICE)
    await settle(1.0)
    assert p.upstream() == [482] and p.downstream(ours) == []

    q = Proxy([to(ours), to(PHONE1)])
    q.phone(PHONE1, answers((200, 0.1)))
    q.stack.receive(request(), ALICE)
    await settle(1.0)
    assert q.upstream() == [200]


@virtual
async def test_no_branches_is_480() -> None:
    p = Proxy([])
    p.stack.receive(request(), ALICE)
    await settle(1.0)
    assert p.upstream() == [480]


def test_best_response_prefers_6xx_then_the_lowest_class_then_code() -> None:
    def r(status: int) -> Response:
        return Response(status)

    assert best_response([]) is None
    assert best_response([r(486), r(603), r(200)]).status == 603  # type: ignore[union-attr]
    assert best_response([r(503), r(407), r(401)]).status == 401  # type: ignore[union-attr]
    assert best_response([r(500), r(302)]).status == 302  # type: ignore[union-attr]


@virtual
async def test_a_2xx_after_the_callers_408_is_acked_and_hung_up() -> None:
    p = Proxy([to(PHONE1)], timers=TimerConfig(fr_inv_timer=20.0))
    # the CANCEL crosses the phone's 200 to the INVITE
    p.phone(PHONE1, ringing(p, cancelled=(481, 200)))
    p.stack.receive(request("INVITE"), ALICE)
    await settle(25.0)
    assert p.upstream() == [100, 180, 408]  # the caller never sees the 200
    [ack] = p.downstream(PHONE1, "ACK")
    [bye] = p.downstream(PHONE1, "BYE")
    assert ack.to.tag == bye.to.tag == "uas"
    assert bye.cseq == (2, "BYE")

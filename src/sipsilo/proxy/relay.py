"""Stateful proxy core (RFC 3261 §16): relay a request, return the best answer.

An INVITE is tried over its branches one after the other (serial forking,
highest q first, §16.6 with §16.7's best-response selection): a 2xx or a 6xx
ends the search, anything else moves on to the next branch. When timer C
(``fr_inv_timer``) expires on a ringing branch, that branch is CANCELled
(§16.8) and counts as a 408.

Any other request (MESSAGE, OPTIONS, ...) goes to every branch at once
(parallel forking): the first 2xx is forwarded at once, otherwise the best
answer when all have answered; the whole relay takes at most ``fr_timer``, so
a failure route (storing the MESSAGE) answers before the sender's timer F
gives up. A 6xx does not end a parallel fork while another branch may still
answer 2xx (§16.7 lets a proxy wait): the failure route would store the
MESSAGE and answer 202 while that other phone goes on to accept it -- two
copies. The fork ends with a failure only once every branch has failed (or
``fr_timer`` is up).

Provisional answers other than 100 are passed upstream as they come. When
every branch failed, a failure hook (the seed's `failure_route[1]`) may answer
upstream itself; otherwise the best answer is forwarded.

A CANCEL (§9.1) is sent on a branch only after it answered provisionally;
a branch that has not yet is CANCELled when its provisional comes. A 2xx
arriving after the caller already got a final answer (a late answer after
the 408 of timer C, or after the CANCEL) is not forwarded: the proxy ACKs it
and hangs up with a BYE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sipsilo.flow import Target
from sipsilo.sip.ids import new_branch
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri
from sipsilo.sip.via import Via
from sipsilo.stack.core import SipStack
from sipsilo.stack.handles import ServerTransaction

log = logging.getLogger(__name__)

FailureHook = Callable[[Response], Awaitable[None]]


@dataclass(frozen=True)
class Branch:
    request_uri: SipUri | str
    target: Target


@dataclass
class _Live:
    """One INVITE branch in flight."""

    request: Request
    target: Target
    provisional: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # a final came
    timer_c: bool = False  # fr_inv_timer fired
    cancel_sent: bool = False
    hung_up: set[str] = field(default_factory=set)  # To tags we BYEd


@dataclass
class _Pending:
    """A relay in progress, kept so a CANCEL can reach its current branch."""

    cancelled: bool = False
    looped: bool = False  # a branch was skipped: it leads back here
    current: _Live | None = None
    responses: list[Response] = field(default_factory=list)


def _rank(status: int) -> tuple[int, int]:
    # §16.7 step 6: 6xx beats everything, then the lowest class wins; inside
    # a class prefer the lowest code (401/407 carry challenges the caller needs).
    if status >= 600:
        return (0, status)
    return (status // 100, status)


def best_response(responses: list[Response]) -> Response | None:
    return min(responses, key=lambda r: _rank(r.status)) if responses else None


class Relay:
    def __init__(self, stack: SipStack, stamp: Callable[[Response], None] | None = None) -> None:
        self.stack = stack
        # Rewrites our Record-Route entry in every response passed upstream
        # (RFC 3261 §16.7 step 4: the caller gets a token of its own).
        self.stamp = stamp
        self._pending: dict[tuple[str, ...], _Pending] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    async def relay(
        self,
        tx: ServerTransaction,
        request: Request,
        branches: list[Branch],
        *,
        record_route: str | None = None,
        failure: FailureHook | None = None,
    ) -> None:
        """Relay request over branches and answer tx with the outcome."""
        pending = _Pending()
        self._pending[tx.key] = pending
        try:
            if request.method == "INVITE":
                await self._serial(tx, request, branches, pending, record_route)
            else:
                await self._parallel(tx, request, branches, pending)
            if tx.final is None:
                await self._answer(tx, pending, failure)
        finally:
            self._pending.pop(tx.key, None)

    def _out(self, request: Request, branch: Branch, record_route: str | None) -> Request:
        hops = request.max_forwards
        out = request.copy()
        out.uri = branch.request_uri
        out.max_forwards = max((70 if hops is None else hops) - 1, 0)
        if record_route and request.method == "INVITE":
            out.headers.prepend("Record-Route", record_route)
        return out

    def _loop_check(self, request: Request, branch: Branch) -> bool:
        if not self._is_ours(branch.target):
            return False
        # A contact (or next hop) that is this very server: relaying there
        # re-enters the route, and with forking over two such contacts every
        # 483 at the bottom moves on to the next branch -- 2**70 requests,
        # CPU and memory without end.
        log.info("not relaying %s to %s: that is this server (loop)",
                 request.method, branch.target)
        return True

    async def _serial(
        self,
        tx: ServerTransaction,
        request: Request,
        branches: list[Branch],
        pending: _Pending,
        record_route: str | None,
    ) -> None:
        for branch in branches:
            if pending.cancelled or tx.final is not None:
                break
            if self._loop_check(request, branch):
                pending.looped = True
                continue
            out = self._out(request, branch, record_route)
            live = _Live(out, branch.target)
            pending.current = live

            def provisional(resp: Response, live: _Live = live) -> None:
                live.provisional.set()
                if resp.status > 100:  # our own server transaction already sent 100
                    tx.respond(self._upstream(resp))

            def late(resp: Response, live: _Live = live) -> bool:
                return self._late(tx, pending, live, resp)

            def timeout(live: _Live = live) -> None:
                live.timer_c = live.provisional.is_set()

            response = await self.stack.send_request(
                out, branch.target, on_provisional=provisional, on_late=late, on_timeout=timeout
            )
            if live.timer_c:
                # §16.8: timer C fired on a ringing branch. CANCEL it; its
                # INVITE transaction stays to ACK the 487 (or the late 2xx is
                # handled by late()).
                self._spawn(self._cancel_branch(live))
            else:
                live.finished.set()
            if 200 <= response.status < 300:
                tx.respond(self._upstream(response))
                return
            pending.responses.append(response)
            if response.status >= 600:
                break

    async def _parallel(
        self,
        tx: ServerTransaction,
        request: Request,
        branches: list[Branch],
        pending: _Pending,
    ) -> None:
        def provisional(resp: Response) -> None:
            if resp.status > 100:
                tx.respond(self._upstream(resp))

        sent: list[Request] = []
        waiting: set[asyncio.Future[Response]] = set()
        for branch in branches:
            if self._loop_check(request, branch):
                pending.looped = True
                continue
            out = self._out(request, branch, None)
            sent.append(out)
            waiting.add(asyncio.ensure_future(
                self.stack.send_request(out, branch.target, on_provisional=provisional)
            ))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stack.timers.fr_timer
        try:
            while waiting and not pending.cancelled:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                done, waiting = await asyncio.wait(
                    waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                for fut in done:
                    response = fut.result()
                    if 200 <= response.status < 300 and tx.final is None:
                        tx.respond(self._upstream(response))
                    pending.responses.append(response)
                if tx.final is not None:
                    break
        finally:
            for fut in waiting:
                # The other branches finish on their own (their transactions
                # absorb what comes); nobody waits for them any more.
                self._spawn(fut)
        if waiting and sent and tx.final is None and not pending.responses:
            # fr_timer is up and no branch answered: the relay's own timeout.
            pending.responses.append(sent[0].make_response(408, "Request Timeout"))

    async def _answer(
        self, tx: ServerTransaction, pending: _Pending, failure: FailureHook | None
    ) -> None:
        best = best_response(pending.responses)
        if best is None:
            # No branch could be tried (all cancelled before the first send,
            # or every one led back here).
            if pending.cancelled:
                tx.reply(487)
            elif pending.looped:
                tx.reply(482, "Loop Detected")
            else:
                tx.reply(480)
            return
        if failure is not None and not pending.cancelled:
            await failure(best)
            if tx.final is not None:
                return
        answer = self._upstream(best)
        if answer.status == 503:
            # §16.7 step 6: a 503 from downstream would tell the caller that
            # *we* are unavailable; relay it as 500.
            answer.status, answer.reason = 500, "Server Internal Error"
        tx.respond(answer)

    def _late(self, tx: ServerTransaction, pending: _Pending, live: _Live, resp: Response) -> bool:
        """A final on live after its transaction gave its answer; True: handled."""
        live.finished.set()
        if not 200 <= resp.status < 300:
            return True  # the 487 to our CANCEL, ACKed by the transaction
        if tx.final is None:
            # The caller has no final answer yet (serial forking moved on):
            # this answer wins; the branch being tried now is CANCELled.
            tx.respond(self._upstream(resp))
            pending.cancelled = True
            current = pending.current
            if current is not None and current is not live:
                self._spawn(self._cancel_branch(current))
            return True
        if 200 <= tx.final.status < 300:
            return False  # a retransmission or another fork: forwarded upstream
        # The caller already has a failure (408, 487): it will never ACK
        # this; the proxy ends the call it would set up.
        self._spawn(self._ack_and_bye(live, resp))
        return True

    async def _ack_and_bye(self, live: _Live, response: Response) -> None:
        invite = live.request
        to = response.headers.get("To") or ""
        tag = response.to.tag or ""
        contacts = response.contacts
        uri: SipUri | str = invite.uri
        if contacts != "*" and contacts and isinstance(contacts[0].uri, SipUri):
            uri = contacts[0].uri
        own = invite.headers.get_all("Record-Route")[:1]
        routes = [r for r in reversed(response.headers.get_all("Record-Route")) if r not in own]
        cseq = invite.cseq[0]
        for method, number in (("ACK", cseq), ("BYE", cseq + 1)):
            if method == "BYE" and tag in live.hung_up:
                return  # a retransmitted 2xx: ACKed again, hung up once
            req = Request(method, uri)
            for route in routes:
                req.headers.add("Route", route)
            req.headers.add("Max-Forwards", "70")
            req.headers.add("From", invite.headers.get("From") or "")
            req.headers.add("To", to)
            req.headers.add("Call-ID", invite.call_id)
            req.headers.add("CSeq", f"{number} {method}")
            req.headers.add("Content-Length", "0")
            if method == "ACK":
                transports = self.stack.transports
                host, port = transports.local_address(
                    live.target.transport, live.target.host, live.target.local
                )
                req.headers.prepend("Via", str(Via(live.target.transport.upper(), host, port,
                                                   [("branch", new_branch())])))
                try:
                    await transports.send(req.serialise(), live.target)
                except (ConnectionError, OSError) as exc:
                    log.info("ACK for a late 2xx not sent to %s: %s", live.target, exc)
                continue
            live.hung_up.add(tag)
            log.info("late 2xx from %s after the caller's final answer: BYE", live.target)
            answer = await self.stack.send_request(req, live.target)
            log.debug("BYE of a late 2xx answered %s", answer.status)

    async def _cancel_branch(self, live: _Live) -> None:
        """CANCEL live once it answered provisionally (§9.1); not if it ended."""
        if live.cancel_sent:
            return
        live.cancel_sent = True
        provisional = asyncio.ensure_future(live.provisional.wait())
        finished = asyncio.ensure_future(live.finished.wait())
        try:
            await asyncio.wait({provisional, finished}, timeout=self.stack.timers.fr_timer,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            provisional.cancel()
            finished.cancel()
        if live.finished.is_set() or not live.provisional.is_set():
            return  # it answered finally (or never): nothing to cancel
        cancel = cancel_for(live.request)
        response = await self.stack.send_request(cancel, live.target, keep_via=True)
        log.debug("CANCEL answered %s", response.status)

    def _spawn(self, aw: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay task failed", exc_info=task.exception())

    def _upstream(self, response: Response) -> Response:
        """The response as sent upstream: our own Via (the top one) removed,
        our Record-Route entry restamped."""
        out = response.copy()
        out.headers.pop_first_value("Via")
        if self.stamp is not None:
            self.stamp(out)
        return out

    def _is_ours(self, target: Target) -> bool:
        """Whether target is one of our own listening sockets (any transport)."""
        return bool(self.stack.transports.is_local_address(target.host, target.port))

    async def cancel(self, invite_key: tuple[str, ...]) -> bool:
        """CANCEL the relay of an INVITE server transaction; False if none."""
        pending = self._pending.get(invite_key)
        if pending is None:
            return False
        pending.cancelled = True
        if pending.current is not None:
            await self._cancel_branch(pending.current)
        return True


def cancel_for(invite: Request) -> Request:
    """§9.1: a CANCEL matching a sent INVITE (same top Via, R-URI, ids)."""
    cancel = Request("CANCEL", invite.uri)
    top = invite.headers.get_all("Via")[0]
    cancel.headers.add("Via", top)
    cancel.headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        value = invite.headers.get(name)
        if value is not None:
            cancel.headers.add(name, value)
    cancel.headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
    for route in invite.headers.get_all("Route"):
        cancel.headers.add("Route", route)
    return cancel



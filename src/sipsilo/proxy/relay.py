"""Stateful proxy core (RFC 3261 §16): relay a request, return the best answer.

Branches are tried one after the other (serial forking, highest q first,
§16.6 with §16.7's best-response selection): a 2xx or a 6xx ends the search,
anything else moves on to the next branch. Provisional answers other than 100
are passed upstream as they come. When every branch failed, a failure hook
(the seed's `failure_route[1]`) may answer upstream itself, for example by
storing a MESSAGE the user's phone would not take; otherwise the best answer
is forwarded.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri
from sipsilo.stack.core import SipStack
from sipsilo.stack.handles import ServerTransaction
from sipsilo.transport.flow import Target

log = logging.getLogger(__name__)

FailureHook = Callable[[Response], Awaitable[None]]


@dataclass(frozen=True)
class Branch:
    request_uri: SipUri | str
    target: Target


@dataclass
class _Pending:
    """A relay in progress, kept so a CANCEL can reach its current branch."""

    cancelled: bool = False
    current: Request | None = None
    target: Target | None = None
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
    def __init__(self, stack: SipStack) -> None:
        self.stack = stack
        self._pending: dict[tuple[str, ...], _Pending] = {}

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
            await self._relay(tx, request, branches, pending, record_route, failure)
        finally:
            self._pending.pop(tx.key, None)

    async def _relay(
        self,
        tx: ServerTransaction,
        request: Request,
        branches: list[Branch],
        pending: _Pending,
        record_route: str | None,
        failure: FailureHook | None,
    ) -> None:
        hops = request.max_forwards
        looped = False
        for branch in branches:
            if pending.cancelled:
                break
            if self._is_ours(branch.target):
                # A contact (or next hop) that is this very server: relaying
                # there re-enters the route, and with serial forking over two
                # such contacts every 483 at the bottom moves on to the next
                # branch -- 2**70 requests, CPU and memory without end.
                log.info("not relaying %s to %s: that is this server (loop)",
                         request.method, branch.target)
                looped = True
                continue
            out = request.copy()
            out.uri = branch.request_uri
            out.max_forwards = max((70 if hops is None else hops) - 1, 0)
            if record_route and request.method == "INVITE":
                out.headers.prepend("Record-Route", record_route)
            pending.current, pending.target = out, branch.target

            def provisional(resp: Response) -> None:
                if resp.status > 100:  # our own server transaction already sent 100
                    tx.respond(_upstream(resp))

            response = await self.stack.send_request(
                out, branch.target, on_provisional=provisional
            )
            if 200 <= response.status < 300:
                tx.respond(_upstream(response))
                return
            pending.responses.append(response)
            if response.status >= 600:
                break
        best = best_response(pending.responses)
        if best is None:
            # No branch could be tried (all cancelled before the first send,
            # or every one led back here).
            if pending.cancelled:
                tx.reply(487)
            elif looped:
                tx.reply(482, "Loop Detected")
            else:
                tx.reply(480)
            return
        if failure is not None and not pending.cancelled:
            await failure(best)
            if tx.final is not None:
                return
        answer = _upstream(best)
        if answer.status == 503:
            # §16.7 step 6: a 503 from downstream would tell the caller that
            # *we* are unavailable; relay it as 500.
            answer.status, answer.reason = 500, "Server Internal Error"
        tx.respond(answer)

    def _is_ours(self, target: Target) -> bool:
        """Whether target is one of our own listening sockets (any transport)."""
        for _, host, port in self.stack.transports.bound():
            if port != target.port:
                continue
            if host == target.host or (_unspecified(host) and _loopback(target.host)):
                return True
        return False

    async def cancel(self, invite_key: tuple[str, ...]) -> bool:
        """CANCEL the relay of an INVITE server transaction; False if none."""
        pending = self._pending.get(invite_key)
        if pending is None:
            return False
        pending.cancelled = True
        if pending.current is not None and pending.target is not None:
            cancel = cancel_for(pending.current)
            response = await self.stack.send_request(cancel, pending.target, keep_via=True)
            log.debug("CANCEL answered %s", response.status)
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


def _unspecified(host: str) -> bool:
    return host in ("0.0.0.0", "::")


def _loopback(host: str) -> bool:
    # Behind a wildcard listener only loopback targets are known to be us:
    # a phone elsewhere on our port number (5060 is common) must still be
    # reached, and enumerating the machine's addresses is not worth it here.
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _upstream(response: Response) -> Response:
    """The response as sent upstream: our own Via (the top one) removed."""
    out = response.copy()
    out.headers.pop_first_value("Via")
    return out

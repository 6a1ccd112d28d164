"""The SIP stack: transports in, transactions in the middle, the router on top.

The transaction machines in `sipsilo.transaction` are pure: they return effects
(send this, start that timer, pass this up). This module is the only place
that carries those effects out with asyncio: timers become `call_later`
handles, sends go to the transports, "pass up" calls the router. Keeping the
glue here and the protocol rules there means the rules are tested with a fake
clock and the glue stays small enough to read in one sitting.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from sipsilo.flow import Flow, Target
from sipsilo.sip.errors import ParseError
from sipsilo.sip.ids import is_loop, loop_branch, new_token
from sipsilo.sip.message import Request, Response
from sipsilo.sip.parser import parse_message
from sipsilo.sip.via import Via
from sipsilo.stack.completed import CompletedTransactions
from sipsilo.stack.edge import answer_unparsable, fix_via_received
from sipsilo.stack.handles import ServerTransaction
from sipsilo.transaction import effects as fx
from sipsilo.transaction.client import InviteClientTransaction, NonInviteClientTransaction
from sipsilo.transaction.keys import client_key, server_key
from sipsilo.transaction.server import InviteServerTransaction, NonInviteServerTransaction
from sipsilo.transaction.timers import TimerConfig
from sipsilo.transport.manager import Transports
from sipsilo.transport.udp import DatagramTooLarge

log = logging.getLogger(__name__)

# Timers a non-INVITE transaction arms when it completes over UDP (J for a
# server, K for a client): from then on it only absorbs retransmissions.
_LINGER_TIMERS = frozenset({"J", "K"})
# How many INVITE client branches are remembered for forwarding stray 2xx
# (retransmissions and forked answers after the transaction ended).
_RECENT_INVITES = 8192
# Methods counted by name in requests_by_method (RFC 3261, 3262, 3265, 3311, 3428,
# 3515, 6086); anything else counts as "OTHER".
COUNTED_METHODS = frozenset({
    "REGISTER", "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "MESSAGE", "PRACK",
    "SUBSCRIBE", "NOTIFY", "PUBLISH", "REFER", "INFO", "UPDATE", "OTHER",
})
_EXPIRES = re.compile(r";\s*expires\s*=\s*(\d+)", re.IGNORECASE)

RequestHandler = Callable[[ServerTransaction], Awaitable[None] | None]
StrayHandler = Callable[[Any, Flow], Awaitable[None] | None]
TransportsFactory = Callable[["SipStack"], "Transports"]


class _Entry:
    """Book-keeping every live transaction has: its key, machine, timers and flow."""

    __slots__ = ("flow", "key", "machine", "timers")

    def __init__(self, key: tuple[str, ...], machine: Any, flow: Flow | None) -> None:
        self.key = key
        self.machine = machine
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.flow = flow


class ServerEntry(_Entry):
    """A server transaction: the TU's handle, and the last response as sent."""

    __slots__ = ("handle", "last_sent", "sent_to")

    def __init__(self, key: tuple[str, ...], machine: Any, flow: Flow,
                 handle: ServerTransaction) -> None:
        super().__init__(key, machine, flow)  # the request's flow
        self.handle = handle
        self.last_sent: bytes | None = None  # re-sent to retransmissions after it ends
        self.sent_to: Flow | None = None  # where it went (§18.2.2)


class ClientEntry(_Entry):
    """A client transaction: where it goes, who waits for its answer and how."""

    __slots__ = ("failure", "future", "on_late", "on_provisional", "on_timeout", "target")

    def __init__(self, key: tuple[str, ...], machine: Any, target: Target) -> None:
        super().__init__(key, machine, None)  # the flow once sent
        self.target = target
        self.future: asyncio.Future[Response] | None = None  # None: nobody waits
        self.on_provisional: Callable[[Response], None] | None = None
        # a final response after the TU already has one (timer C's 408);
        # True when the TU took care of it
        self.on_late: Callable[[Response], bool] | None = None
        self.on_timeout: Callable[[], None] | None = None  # timer C/B/F fired
        # the synthetic answer to a transport failure
        self.failure: tuple[int, str] = (503, "Service Unavailable")


class SipStack:
    """Built in one step: the transports come from ``transports(stack)``, which may
    wire their input to the public ``receive``, ``on_framing_error`` and
    ``connection_closed``; requests go up to ``on_request``, ACKs and responses
    that match no transaction to ``on_stray_ack`` / ``on_stray_response``.
    """

    def __init__(
        self,
        transports: TransportsFactory,
        timers: TimerConfig,
        on_request: RequestHandler,
        *,
        on_stray_ack: StrayHandler | None = None,
        on_stray_response: StrayHandler | None = None,
        server_header: str | None = None,
        branch_token: str | None = None,
        branch_tag: str = "",
    ) -> None:
        self.timers = timers
        self.server_header = server_header
        self.on_request = on_request
        self.on_stray_ack = on_stray_ack
        self.on_stray_response = on_stray_response
        self._server: dict[tuple[str, ...], ServerEntry] = {}
        self._client: dict[tuple[str, ...], ClientEntry] = {}
        # On the loop's clock, like the timers that fill it.
        self._completed = CompletedTransactions(lambda: asyncio.get_running_loop().time())
        # Names this server in every branch it makes; several worker processes
        # share one, so a request looping through two of them is still a loop.
        self.branch_token = branch_token or new_token()
        # With several worker processes: this one's number, in its branches, so
        # that responses are handed back to it (workers.keys).
        self.branch_tag = branch_tag
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # INVITE client branches we generated lately (branch -> monotonic time)
        self._recent_invites: OrderedDict[
            str, tuple[float, Callable[[Response], bool] | None]
        ] = OrderedDict()
        self.counters = {"rx_requests": 0, "rx_responses": 0, "rx_errors": 0, "retransmissions": 0}
        # For /metrics: requests received by method (other methods as "OTHER", so a
        # peer cannot grow the table), responses received and sent by class (index 1-6).
        self.requests_by_method: dict[str, int] = dict.fromkeys(COUNTED_METHODS, 0)
        self.responses_received = [0] * 7
        self.responses_sent = [0] * 7
        self.transports: Transports = transports(self)

    # ------------------------------------------------------------------ input
    def receive(self, data: bytes, flow: Flow) -> None:
        """Entry point for every message the transports read."""
        try:
            message = parse_message(data)
        except ParseError as exc:
            self.counters["rx_errors"] += 1
            log.info("unparsable message from %s: %s %s", flow, exc.status, exc.reason)
            self._answer_error(data, flow, exc)
            return
        if isinstance(message, Request):
            self.counters["rx_requests"] += 1
            method = message.method
            self.requests_by_method[method if method in COUNTED_METHODS else "OTHER"] += 1
            self._receive_request(message, flow)
        else:
            self.counters["rx_responses"] += 1
            self.responses_received[message.status // 100] += 1
            self._receive_response(message, flow)

    def on_framing_error(self, data: bytes, flow: Flow, exc: ParseError) -> None:
        self.counters["rx_errors"] += 1
        self._answer_error(data, flow, exc)

    def _answer_error(self, data: bytes, flow: Flow, exc: ParseError) -> None:
        response = answer_unparsable(data, exc, self.server_header)
        if response is None:
            return  # not even enough to answer: dropped (and logged above)
        self._send_on_flow(response, flow)

    def _receive_request(self, request: Request, flow: Flow) -> None:
        fix_via_received(request, flow)
        key = server_key(request)
        done = self._completed.get(key)
        if done is not None:
            # A retransmission after the final answer: the same answer again.
            self.counters["retransmissions"] += 1
            final, sent_to = done
            if final is not None and sent_to is not None:
                self._send_on_flow(final, sent_to)
            return
        entry = self._server.get(key)
        if entry is not None:
            self.counters["retransmissions"] += 1
            self._run(entry, entry.machine.on_request(request))
            return
        if request.method == "ACK":
            # An ACK that matches no transaction acknowledges a 2xx: it belongs to
            # the dialog, not to us, and a proxy forwards it statelessly.
            if self.on_stray_ack is not None:
                self._spawn(self.on_stray_ack(request, flow))
            return
        cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
        handle = ServerTransaction(self, request, flow, key)
        entry = ServerEntry(key, cls(request, flow.reliable, self.timers), flow, handle)
        self._server[key] = entry
        self._run(entry, entry.machine.start())

    def _receive_response(self, response: Response, flow: Flow) -> None:
        try:
            key = client_key(response)
        except ParseError:
            return
        entry = self._client.get(key)
        if entry is None and key in self._completed:
            return  # a retransmitted final response, already handled
        if entry is None:
            # e.g. a 2xx retransmission to an INVITE whose transaction ended:
            # the relay that sent the INVITE may take it (a 2xx after the
            # caller got another final answer), else it is forwarded.
            if key[1] == "INVITE" and 200 <= response.status < 300:
                recent = self._recent_invite(key[0])
                if recent is not None and recent[1] is not None and recent[1](response):
                    return
            if self.on_stray_response is not None:
                self._spawn(self.on_stray_response(response, flow))
            return
        self._run(entry, entry.machine.on_response(response))

    def tu_response(self, handle: ServerTransaction, response: Response) -> None:
        """The routing layer answers the request of `handle`."""
        self.responses_sent[response.status // 100] += 1
        entry = self._server.get(handle.key)
        if entry is None or entry.handle is not handle:
            # The transaction already ended (e.g. timer H); answer statelessly.
            self._send_response(response, handle.flow)
            return
        self._run(entry, entry.machine.on_tu_response(response))

    def loops_back(self, request: Request) -> bool:
        """The request already went through us for this same Request-URI."""
        try:
            branches = [b for b in (v.branch for v in request.vias) if b]
        except ParseError:
            return False
        return is_loop(self.branch_token, request.uri, branches)

    def drop(self, key: tuple[str, ...]) -> None:
        """Abandon a server transaction without answering (a route's drop()).

        It leaves the table, and retransmissions of its request are absorbed
        unanswered for 64*T1 instead of reaching the route again.
        """
        entry = self._server.get(key)
        if entry is not None and entry.handle.final is None:
            # An INVITE may have sent its 100 Trying already: still unanswered.
            self._linger(entry, self.timers.t1 * 64)

    def find_server_transaction(self, key: tuple[str, ...]) -> ServerTransaction | None:
        entry = self._server.get(key)
        return entry.handle if entry is not None else None

    # ------------------------------------------------------------ client side
    async def send_request(
        self,
        request: Request,
        target: Target,
        *,
        on_provisional: Callable[[Response], None] | None = None,
        keep_via: bool = False,
        on_late: Callable[[Response], bool] | None = None,
        on_timeout: Callable[[], None] | None = None,
    ) -> Response:
        """Send a request in a new client transaction; return its final response.

        A Via with a fresh branch is put on top, unless keep_via: a CANCEL must
        carry the very Via of the INVITE it cancels (§9.1). A timeout gives a
        synthetic 408, a transport failure a synthetic 503, so callers handle
        one kind of result. on_late sees the responses that arrive after that
        result (an INVITE after timer C: the 487 or a late 2xx); it returns
        True when it dealt with one, else a 2xx is forwarded as a stray.
        on_timeout is called just before a timeout's synthetic 408 is returned.
        """
        entry = self._start_client(request, target, keep_via, wait=True)
        entry.on_provisional = on_provisional
        entry.on_late = on_late
        entry.on_timeout = on_timeout
        if request.method == "INVITE":
            self._remember_invite(entry.key[0], on_late)
        assert entry.future is not None
        return await entry.future

    def start_request(self, request: Request, target: Target) -> None:
        """Send a non-INVITE request in a new client transaction, not waiting for
        its answer (the offline notice: nobody acts on it). Retransmissions and
        the transaction's timers run as for send_request."""
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"start_request is for non-INVITE requests, not {request.method}")
        self._start_client(request, target, False, wait=False)

    def _start_client(
        self, request: Request, target: Target, keep_via: bool, *, wait: bool
    ) -> ClientEntry:
        if keep_via:
            top = request.top_via
            assert top is not None and top.branch is not None
            via = top
        else:
            host, port = self.transports.local_address(
                target.transport, target.host, target.local
            )
            branch = loop_branch(self.branch_token, str(request.uri), self.branch_tag)
            via = Via(target.transport.upper(), host, port, [("branch", branch)])
            if target.transport == "udp":
                via.set_param("rport", None)
            request.headers.prepend("Via", str(via))
            if target.route is not None:
                route = target.route  # a hand-over's is signed for this very request
                if not isinstance(route, str):
                    route = route(request)
                request.headers.prepend("Route", route)
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        key = (str(via.branch), request.method if request.method != "ACK" else "INVITE")
        entry = ClientEntry(key, cls(request, target.reliable, self.timers), target)
        if wait:
            entry.future = asyncio.get_running_loop().create_future()
        self._client[key] = entry
        self._run(entry, entry.machine.start())
        return entry

    def _remember_invite(self, branch: str, on_late: Callable[[Response], bool] | None) -> None:
        recent = self._recent_invites
        recent[branch] = (asyncio.get_running_loop().time(), on_late)
        while len(recent) > _RECENT_INVITES:
            recent.popitem(last=False)

    def sent_invite_branch(self, branch: str | None) -> bool:
        """Whether we sent an INVITE with this top Via branch lately (64*T1 + fr_inv_timer)."""
        if branch is None:
            return False
        return self._recent_invite(branch) is not None

    def _recent_invite(
        self, branch: str
    ) -> tuple[float, Callable[[Response], bool] | None] | None:
        sent = self._recent_invites.get(branch)
        if sent is None:
            return None
        horizon = self.timers.fr_inv_timer + self.timers.fr_timer + self.timers.t1x64
        if asyncio.get_running_loop().time() - sent[0] > horizon:
            return None
        return sent

    def _finish_client(self, entry: ClientEntry, response: Response) -> None:
        if entry.future is not None and not entry.future.done():
            entry.future.set_result(response)

    def _synthetic(self, entry: _Entry, status: int, reason: str) -> Response:
        request: Request = entry.machine.request
        response = request.make_response(status, reason)
        return response

    # ---------------------------------------------------------------- effects
    def _run(self, entry: _Entry, effects: list[fx.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, fx.Send):
                self._send_effect(entry, effect.message)
            elif isinstance(effect, fx.StartTimer):
                if effect.name in _LINGER_TIMERS:
                    self._linger(entry, effect.delay)
                    continue
                old = entry.timers.pop(effect.name, None)
                if old is not None:
                    old.cancel()
                entry.timers[effect.name] = asyncio.get_running_loop().call_later(
                    effect.delay, self._fire, entry, effect.name
                )
            elif isinstance(effect, fx.CancelTimer):
                handle = entry.timers.pop(effect.name, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(effect, fx.PassToTU):
                self._pass_up(entry, effect.message)
            elif isinstance(effect, fx.Timeout):
                # A server's Timeout (timer H: no ACK came) needs nothing more.
                if (isinstance(entry, ClientEntry) and entry.future is not None
                        and not entry.future.done()):
                    if entry.on_timeout is not None:
                        entry.on_timeout()
                    self._finish_client(entry, self._synthetic(entry, 408, "Request Timeout"))
            elif isinstance(effect, fx.TransportFailed):
                if isinstance(entry, ClientEntry) and entry.future is not None:
                    self._finish_client(entry, self._synthetic(entry, *entry.failure))
            elif isinstance(effect, fx.Terminated):
                self._terminate(entry)

    def _linger(self, entry: _Entry, delay: float) -> None:
        """Completed non-INVITE transaction: keep only what absorbs retransmissions."""
        for handle in entry.timers.values():
            handle.cancel()
        entry.timers.clear()
        self._drop(entry)
        if isinstance(entry, ServerEntry):
            self._completed.add(entry.key, entry.last_sent, entry.sent_to, delay)
        else:
            self._completed.add(entry.key, None, None, delay)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def _sweep(self) -> None:
        self._completed.expire()
        self._sweeper = None
        if len(self._completed):
            self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def _fire(self, entry: _Entry, name: str) -> None:
        entry.timers.pop(name, None)
        try:
            self._run(entry, entry.machine.on_timer(name))
        except Exception:
            log.exception("timer %s of transaction %s failed", name, entry.key)

    def _terminate(self, entry: _Entry) -> None:
        for handle in entry.timers.values():
            handle.cancel()
        entry.timers.clear()
        self._drop(entry)
        if isinstance(entry, ClientEntry) and entry.future is not None and not entry.future.done():
            # A client transaction that ended without a final answer timed out.
            self._finish_client(entry, self._synthetic(entry, 408, "Request Timeout"))

    def _drop(self, entry: _Entry) -> None:
        table: dict[tuple[str, ...], Any] = (
            self._server if isinstance(entry, ServerEntry) else self._client)
        if table.get(entry.key) is entry:
            del table[entry.key]

    def _pass_up(self, entry: _Entry, message: Request | Response) -> None:
        if isinstance(message, Request):
            assert isinstance(entry, ServerEntry) and entry.flow is not None
            if message.method == "ACK":
                # The ACK of a 2xx matched the INVITE server transaction while it
                # waits in Accepted (RFC 6026): it goes on end to end.
                if self.on_stray_ack is not None:
                    self._spawn(self.on_stray_ack(message, entry.flow))
                return
            self._spawn(self._handle_request(entry.handle))
            return
        assert isinstance(entry, ClientEntry)
        if message.status < 200:
            if entry.on_provisional is not None:
                entry.on_provisional(message)
            return
        if entry.future is not None and entry.future.done():
            # A final after the TU has its answer: a late one after timer C
            # (the TU may take it), or a further 2xx (retransmission or another
            # fork) after the first, which the proxy relays upstream statelessly.
            if entry.on_late is not None and entry.on_late(message):
                return
            if (200 <= message.status < 300 and self.on_stray_response is not None
                    and entry.flow is not None):
                self._spawn(self.on_stray_response(message, entry.flow))
            return
        self._finish_client(entry, message)

    def _send_effect(self, entry: _Entry, message: Request | Response) -> None:
        data = message.serialise()
        if isinstance(message, Response):
            assert isinstance(entry, ServerEntry) and entry.flow is not None
            entry.last_sent = data
            # The response carries the request's Vias verbatim: route it with
            # the request's already parsed top Via instead of parsing it again.
            entry.sent_to = self._send_response(
                message, entry.flow, data, entry.machine.request.top_via
            )
            return
        if entry.flow is not None:
            try:
                self.transports.send_on_flow(data, entry.flow)
                return
            except (ConnectionError, OSError) as exc:
                log.info("send to %s failed: %s", entry.flow, exc)
                self._run(entry, entry.machine.on_transport_error())
                return
        assert isinstance(entry, ClientEntry)
        if entry.target.transport == "udp":
            # No connection to open: send now rather than in a task of its own.
            try:
                entry.flow = self.transports.send_datagram(data, entry.target)
            except (ConnectionError, OSError) as exc:
                log.info("send to %s failed: %s", entry.target, exc)
                if isinstance(exc, DatagramTooLarge):
                    # It will never fit: a permanent failure (a delivery skips
                    # this message and goes on), not a 503 to retry for ever.
                    entry.failure = (513, "Message Too Large")
                # Not from inside this run of effects: the machine is mid-step.
                asyncio.get_running_loop().call_soon(self._transport_error, entry)
            return
        self._spawn(self._first_send(entry, data))

    def _transport_error(self, entry: _Entry) -> None:
        self._run(entry, entry.machine.on_transport_error())

    def connection_closed(self, conn_id: int) -> None:
        """A stream connection closed: requests sent over it and still
        waiting for their final answer fail now (§17.1.4, a transport error)
        instead of at timer F. A MESSAGE relayed to a web client whose tab
        just closed is then stored at once rather than after fr_timer."""
        waiting = [e for e in self._client.values()
                   if e.flow is not None and e.flow.conn_id == conn_id
                   and e.future is not None and not e.future.done()]
        for entry in waiting:
            log.info("connection %s closed before %s got its answer", entry.flow,
                     entry.machine.request.method)
            self._transport_error(entry)

    async def _first_send(self, entry: ClientEntry, data: bytes) -> None:
        try:
            entry.flow = await self.transports.send(data, entry.target)
        except (ConnectionError, OSError) as exc:
            log.info("send to %s failed: %s", entry.target, exc)
            self._run(entry, entry.machine.on_transport_error())

    def _send_response(
        self, response: Response, flow: Flow, data: bytes | None = None, top: Via | None = None
    ) -> Flow | None:
        """RFC 3261 §18.2.2: back over the connection, or to received/rport.

        Returns the flow it was sent on, so retransmissions can follow it.
        """
        data = data if data is not None else response.serialise()
        if flow.reliable:
            try:
                self.transports.send_on_flow(data, flow)
            except (ConnectionError, OSError) as exc:
                # §18.2.2: the connection is gone; open one to received:sent-by port.
                top = top if top is not None else response.top_via
                if top is None:
                    log.info("cannot send to %s: %s", flow, exc)
                    return None
                default = 5061 if flow.transport == "tls" else 5060
                target = Target(flow.transport, top.received or top.host, top.port or default)
                log.info("connection %s gone (%s); answering over a new one to %s",
                         flow, exc, target)
                self._spawn(self._send_new_connection(data, target))
                return None
            self._pin_registered(response, flow)
            return flow
        if top is None:
            top = response.top_via
        if top is None:
            return None
        host = top.received or top.host
        # rport_value ignores a value no socket takes (the edge overwrites
        # what senders write, but a TU may build the Via itself).
        port = top.rport_value or top.port or 5060
        dest = flow if (host, port) == flow.remote else Flow("udp", flow.local, (host, port))
        self._send_on_flow(data, dest)
        return dest

    async def _send_new_connection(self, data: bytes, target: Target) -> None:
        try:
            await self.transports.send(data, target)
        except (ConnectionError, OSError) as exc:
            log.info("cannot send to %s: %s", target, exc)

    def _pin_registered(self, response: Response, flow: Flow) -> None:
        """A 2xx to REGISTER over a connection: keep it open while bindings last."""
        if response.cseq[1] != "REGISTER" or not 200 <= response.status < 300:
            return
        longest = 0
        for value in response.headers.get_all("Contact"):
            for number in _EXPIRES.findall(value):
                longest = max(longest, int(number))
        if longest:
            self.transports.tcp.pin(flow.conn_id, longest)

    def _send_on_flow(self, data: bytes, flow: Flow) -> None:
        try:
            self.transports.send_on_flow(data, flow)
        except (ConnectionError, OSError) as exc:
            log.info("cannot send to %s: %s", flow, exc)

    async def _handle_request(self, handle: ServerTransaction) -> None:
        try:
            result = self.on_request(handle)
            if result is not None:
                await result
        except Exception:
            log.exception("error routing %s from %s", handle.request.method, handle.flow)
            if handle.final is None and handle.request.method != "ACK":
                handle.reply(500, "Server Internal Error")

    # ------------------------------------------------------------------ tasks
    def _spawn(self, result: Awaitable[None] | None) -> None:
        if result is None or not asyncio.iscoroutine(result):
            return
        task = asyncio.ensure_future(result)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request handler failed", exc_info=task.exception())

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._completed.clear()
        for table in (self._server, self._client):
            for entry in list(table.values()):
                for handle in entry.timers.values():
                    handle.cancel()
            table.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def live_transactions(self) -> int:
        return len(self._server) + len(self._client) + len(self._completed)

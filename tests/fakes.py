"""Socket-free doubles for the stack's unit tests: a loop whose clock is virtual,
transports that record what is sent, and a request builder.

``run(main())`` runs a coroutine on :class:`VirtualClockLoop`: whenever the
loop would block waiting for its next timer, the clock jumps to that timer
instead, so timers of 32 s (F, J, fr_timer) run out at once and in order,
and no test waits in real time. There is no I/O to wait for; a loop with
nothing scheduled and nothing ready is a deadlock and fails the test.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from sipsilo.flow import Flow, Target
from sipsilo.sip.message import Request, Response
from sipsilo.sip.parser import parse_message

T = TypeVar("T")

LOCAL = ("192.0.2.1", 5060)  # our one listener
ALICE = Flow("udp", LOCAL, ("198.51.100.7", 5062))  # where requests come from


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: nothing scheduled and nothing to read")
        self._loop.now += timeout
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self.now


def run(main: Coroutine[Any, Any, T]) -> T:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def virtual(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a fresh :class:`VirtualClockLoop`."""

    @functools.wraps(test)
    def sync() -> None:
        run(test())

    return sync


async def settle(seconds: float = 0.0) -> None:
    """Let every task run as far as it can; with seconds, let that much virtual time pass."""
    for _ in range(20):
        await asyncio.sleep(0)
    if seconds:
        await asyncio.sleep(seconds)
        for _ in range(20):
            await asyncio.sleep(0)


@dataclass
class Sent:
    data: bytes
    to: Flow | Target
    at: float  # virtual time

    @property
    def message(self) -> Request | Response:
        return parse_message(self.data)

    @property
    def status(self) -> int | None:
        """A response's status, read from its first line (even if the rest is unparsable)."""
        first = self.data.split(b"\r\n", 1)[0].split()
        return int(first[1]) if first[0].startswith(b"SIP/") else None


class FakeTcp:
    def __init__(self) -> None:
        self.pinned: dict[int | None, float] = {}
        self.open: dict[int, tuple[str, int]] = {}  # conn_id -> remote address
        # (conn_id, signed) for every request on a hop connection (TcpRegistry.hop_request)
        self.hop_requests: list[tuple[int | None, bool]] = []

    def hop_request(self, conn_id: int | None, signed: bool) -> None:
        self.hop_requests.append((conn_id, signed))

    def pin(self, conn_id: int | None, seconds: float) -> None:
        self.pinned[conn_id] = seconds

    def get(self, conn_id: int | None) -> object | None:
        return object() if conn_id in self.open else None

    def of_flow(self, conn_id: int | None, remote: tuple[str, int]) -> object | None:
        return object() if conn_id is not None and self.open.get(conn_id) == remote else None


class FakeTransports:
    """What the stack asks of ``transport.manager.Transports``, recorded.

    ``peer(message, to)`` is called for every message sent: a test's
    downstream UA answers there (``answer``). ``fail`` makes every send raise
    that exception; ``own`` lists addresses that count as our own sockets.
    """

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.tcp = FakeTcp()
        self.peer: Callable[[Request | Response, Flow | Target], None] | None = None
        self.fail: OSError | None = None
        self.own: set[tuple[str, int]] = {LOCAL}
        self.stack: Any = None
        self._conn = 0

    def attach(self, stack: Any) -> FakeTransports:
        self.stack = stack
        return self

    def local_address(
        self, transport: str, remote_host: str, local: tuple[str, int] | None = None
    ) -> tuple[str, int]:
        return LOCAL

    def advertised(self, flow: Flow) -> tuple[str, int]:
        return LOCAL

    def is_local_address(self, host: str, port: int) -> bool:
        return (host, port) in self.own

    def _record(self, data: bytes, to: Flow | Target) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(Sent(data, to, asyncio.get_running_loop().time()))
        if self.peer is not None:
            self.peer(parse_message(data), to)

    def send_on_flow(self, data: bytes, flow: Flow) -> None:
        self._record(data, flow)

    def send_datagram(self, data: bytes, target: Target) -> Flow:
        self._record(data, target)
        return Flow("udp", LOCAL, (target.host, target.port))

    async def send(self, data: bytes, target: Target) -> Flow:
        self._record(data, target)
        self._conn += 1
        return Flow(target.transport, LOCAL, (target.host, target.port), self._conn)

    # -- what the tests read ------------------------------------------------
    def requests(self, method: str | None = None) -> list[Request]:
        out = [s.message for s in self.sent if s.status is None]
        return [m for m in out if isinstance(m, Request) and method in (None, m.method)]

    def responses(self) -> list[Response]:
        out = [s.message for s in self.sent if s.status is not None]
        return [m for m in out if isinstance(m, Response)]

    def statuses(self) -> list[int]:
        return [s.status for s in self.sent if s.status is not None]

    def answer(self, request: Request, status: int, *, to_tag: str = "uas",
               flow: Flow | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """The downstream UA answers ``request`` (as the stack sent it)."""
        response = request.make_response(status, to_tag=to_tag)
        for name, value in headers:
            response.headers.add(name, value)
        self.stack.receive(response.serialise(), flow or Flow("udp", LOCAL, ("203.0.113.5", 5060)))


def request(
    method: str = "MESSAGE",
    uri: str = "sip:bob@192.0.2.1",
    *,
    branch: str = "z9hG4bKalice1",
    cseq: int = 1,
    to_tag: str | None = None,
    extra: str = "",
) -> bytes:
    """A request from ALICE, as bytes on the wire (``extra``: more header lines)."""
    to = "<sip:bob@192.0.2.1>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.7:5062;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@192.0.2.1>;tag=a1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1@198.51.100.7\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def ack_for(invite: bytes, final: Response) -> bytes:
    """The ACK a UAC sends for a 3xx-6xx: same branch, the response's To."""
    text = invite.decode()
    head, _, _ = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    out = ["ACK " + lines[0].split(" ", 1)[1]]
    for line in lines[1:]:
        name = line.split(":", 1)[0].lower()
        if name == "to":
            out.append(f"To: {final.headers.get('To')}")
        elif name == "cseq":
            out.append(f"CSeq: {line.split()[1]} ACK")
        elif name not in ("content-type", "content-length"):
            out.append(line)
    return ("\r\n".join(out) + "\r\nContent-Length: 0\r\n\r\n").encode()

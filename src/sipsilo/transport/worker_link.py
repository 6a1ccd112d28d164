"""A worker process's end of its link to the supervisor (``[server] workers`` > 1).

The supervisor owns the listening UDP sockets and reads every datagram; each
worker inherits the same sockets but only *sends* on them, so its responses
and requests leave from the listening address (a NAT pinhole a phone opened to
port 5060 stays usable) and replies to its requests come back to that address,
where the supervisor hands them to the worker named in their Via branch.

Between the two runs one SOCK_SEQPACKET socket pair: message boundaries are
kept, and a closed end reads as end-of-file, so a worker notices at once when
its supervisor is gone. Frames, first byte their kind:

* ``S`` supervisor → worker: a SIP datagram. Listener index (1 byte), source
  port (2 bytes), length of the source host (1 byte), host, then the datagram.
* ``L`` both ways: a change of the location service, replicated to every other
  worker (see registrar.replicated).
* ``C`` supervisor → worker, first of all: the worker's number and the
  configuration, as JSON.
* ``R`` worker → supervisor: the worker is ready for its sockets.
* ``F`` supervisor → worker, once, right after every worker said ``R`` (or
  after a worker started in place of a dead one said it): the listening
  sockets, as file descriptors (SCM_RIGHTS): the UDP ones in listen order,
  then this worker's own SO_REUSEPORT socket of each stream listener.
* ``Q`` worker → supervisor: a question (request id, 4 bytes, then its text) for
  state the supervisor keeps for all its workers (the authentication replay and
  failure tables, see workers.auth_link); ``A`` supervisor → worker: the answer,
  under the same id. Both go as reliable frames: a lost question would leave a
  request waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from sipsilo.transport.udp import UdpListener

log = logging.getLogger(__name__)

SIP = 0x53  # "S"
LOCATION = 0x4C  # "L"
READY = 0x52  # "R"
SOCKETS = 0x46  # "F"
SPEC = 0x43  # "C"
QUESTION = 0x51  # "Q"
ANSWER = 0x41  # "A"
MAX_FRAME = 65536 + 300  # a UDP datagram plus the header
LINK_BUFFER = 8 * 1024 * 1024  # like the UDP receive buffer: bursts wait here


def sip_frame(listener: int, host: str, port: int, data: bytes) -> list[bytes]:
    """The parts of an ``S`` frame (sent with sendmsg: no copy of the datagram)."""
    h = host.encode()
    return [bytes((SIP, listener)) + port.to_bytes(2, "big") + bytes((len(h),)) + h, data]


def tune(sock: socket.socket) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, LINK_BUFFER)
    sock.setblocking(False)


def read_spec(link: socket.socket) -> bytes:
    """The worker's first read: its ``C`` frame (blocking; nothing runs yet)."""
    link.setblocking(True)
    frame = link.recv(MAX_FRAME)
    if not frame or frame[0] != SPEC:
        raise LinkClosed("no start-up frame from the supervisor")
    return frame[1:]


def send_sockets(link: socket.socket, fds: list[int]) -> None:
    """The supervisor's half of the handshake (see WorkerLink.handshake)."""
    link.setblocking(True)
    try:
        socket.send_fds(link, [bytes((SOCKETS,))], fds)
    finally:
        link.setblocking(False)


class ReliableFrames:
    """Frames that must not be lost (location changes) on a non-blocking link.

    A SIP datagram that does not fit the link is dropped like one the kernel
    drops on a full UDP buffer: its sender retransmits. A location change has
    no sender to retransmit it, so what does not fit waits here, in order, and
    goes as soon as the link can take it; until then it goes before any new
    datagram (``busy``: the supervisor drops datagrams for that worker).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._queue: collections.deque[bytes] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drained: list[Callable[[], None]] = []

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def send(self, frame: bytes) -> None:
        if not self._queue:
            try:
                self._sock.send(frame)
                return
            except BlockingIOError:
                pass
            except OSError as exc:  # the other end is gone: nothing to keep
                log.debug("link: %s", exc)
                return
        self._queue.append(frame)
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_writer(self._sock.fileno(), self._flush)

    def then(self, action: Callable[[], None]) -> None:
        """Run *action* once the queue is empty: every frame queued so far (and
        any queued meanwhile) is on the link; at once when none waits. For what
        must not overtake them, such as a restarted worker's sockets after the
        location snapshot it needs before serving. Never, if closed first."""
        if self._queue:
            self._drained.append(action)
        else:
            action()

    def _flush(self) -> None:
        while self._queue:
            try:
                self._sock.send(self._queue[0])
            except BlockingIOError:
                return
            except OSError as exc:
                log.debug("link: %s", exc)
                self._queue.clear()
                break
            self._queue.popleft()
        if self._loop is not None:
            self._loop.remove_writer(self._sock.fileno())
            self._loop = None
        drained, self._drained = self._drained, []
        for action in drained:
            action()


    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._sock.fileno())
            self._loop = None
        self._queue.clear()
        self._drained.clear()


class LinkClosed(Exception):
    """The supervisor has gone."""


class SharedUdpListener(UdpListener):
    """A UDP listener whose socket is read by the supervisor: this process only sends.

    Datagrams arrive through the WorkerLink, which calls datagram_received.
    """

    def __init__(self, host: str, port: int, receiver: Any, sock: socket.socket) -> None:
        super().__init__(host, port, receiver)
        self._sock: socket.socket | None = sock

    async def start(self) -> None:
        assert self._sock is not None
        self._sock.setblocking(False)
        bound = self._sock.getsockname()
        self.local = (self.host, bound[1])
        self.port = bound[1]

    def _sendto(self, data: bytes, remote: tuple[str, int]) -> None:
        if self._sock is None:
            raise ConnectionError("UDP listener is not running")
        try:
            self._sock.sendto(data, remote)
        except BlockingIOError:
            # The socket's send buffer is full: as good as lost on the wire;
            # the transaction layer retransmits.
            log.debug("udp send buffer full; datagram to %s dropped", remote)

    def close(self) -> None:
        # The socket is the supervisor's too: closing our copy is all we may do.
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WorkerLink:
    """Reads frames from the supervisor and hands them on."""

    def __init__(self, sock: socket.socket, on_lost: Callable[[], None]) -> None:
        self._sock = sock
        # Applies a location change another worker published (the location
        # service sets it once it exists); None: such changes are ignored.
        self.on_location: Callable[[bytes], None] | None = None
        self._on_lost = on_lost
        self._reliable = ReliableFrames(sock)
        self.listeners: list[UdpListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asked: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0

    def handshake(self) -> list[socket.socket]:
        """Say ready; wait for the listening sockets (blocking: nothing else to do yet)."""
        sock = self._sock
        sock.setblocking(True)
        sock.send(bytes((READY,)))
        while True:
            frame, fds, _, _ = socket.recv_fds(sock, MAX_FRAME, 16)
            if not frame:
                raise LinkClosed("the supervisor went away during start-up")
            if frame[0] == SOCKETS:
                return [socket.socket(fileno=fd) for fd in fds]
            for fd in fds:  # nothing else carries descriptors
                os.close(fd)
            if frame[0] == LOCATION and self.on_location is not None:
                self.on_location(frame[1:])

    def start(self, listeners: list[UdpListener]) -> None:
        self.listeners = listeners
        tune(self._sock)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def ask(self, question: bytes) -> asyncio.Future[bytes]:
        """Send a ``Q`` frame; the future gets the supervisor's answer (LinkClosed
        if the link closes first)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self._loop is None:  # not started, or closed
            future.set_exception(LinkClosed("no link to the supervisor"))
            return future
        self._next_id = ask_id = (self._next_id + 1) & 0xFFFFFFFF
        self._asked[ask_id] = future
        # a question given up on (timed out) takes its slot with it
        future.add_done_callback(lambda _: self._asked.pop(ask_id, None))
        self._reliable.send(bytes((QUESTION,)) + self._next_id.to_bytes(4, "big") + question)
        return future

    def publish_location(self, change: bytes) -> None:
        """A location change, for every other worker: never dropped."""
        self._reliable.send(bytes((LOCATION,)) + change)

    def _readable(self) -> None:
        # Drain a bounded number per wake-up: other callbacks get their turn.
        recv = self._sock.recv
        for _ in range(64):
            try:
                frame = recv(MAX_FRAME)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("link to the supervisor: %s", exc)
                frame = b""
            if not frame:
                self.close()
                self._on_lost()
                return
            kind = frame[0]
            if kind == SIP:
                hl = frame[4]
                host = frame[5:5 + hl].decode()
                port = int.from_bytes(frame[2:4], "big")
                index = frame[1]
                if index < len(self.listeners):
                    self.listeners[index].datagram_received(frame[5 + hl:], (host, port))
            elif kind == ANSWER:
                future = self._asked.pop(int.from_bytes(frame[1:5], "big"), None)
                if future is not None and not future.done():
                    future.set_result(frame[5:])
            elif kind == LOCATION and self.on_location is not None:
                try:
                    self.on_location(frame[1:])
                except Exception:
                    log.exception("replicated location change failed")

    def close(self) -> None:
        self._reliable.close()
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
            self._loop = None
        for future in self._asked.values():
            if not future.done():
                future.set_exception(LinkClosed("the supervisor went away"))
        self._asked.clear()

"""`sipsilo serve` with ``[server] workers`` > 1: one supervisor, N worker processes.

One Python process handles about 2,500 stored MESSAGEs a second; a machine
has more cores than that. The supervisor binds the listeners, starts the
workers (each a complete sipsilo: stack, routing, silo, delivery) and then only
moves datagrams: it reads each one, picks its worker with workers.keys (by
user for requests, by the worker's mark in the Via branch for responses) and
passes it over that worker's socket pair. Workers send straight out of the
same listening sockets, which they inherit. Stream listeners (TCP, TLS, WS,
WSS) are one SO_REUSEPORT socket per worker, which the worker accepts on
itself: the supervisor never sees a connection.

It also answers the control channel (`sipsilo stats`, `sipsilo location
list`) by asking every worker and adding up, and it stops the workers in
order: on SIGTERM every worker gets SIGTERM and finishes what it is doing
(its deliveries in flight still receive their 2xx through this process);
the sockets close when the last worker has gone. A worker that dies on its
own is replaced by a new process with the same number, which gets the
location table (the supervisor keeps a copy of the replicated one) and the
same sockets; its connections are lost, and their users register again. A
worker dying at start-up or again and again (MAX_RESTARTS within
RESTART_WINDOW) takes the others down with it and the supervisor exits with
status 1, for the process manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sipsilo import __version__
from sipsilo.auth.nonce import load_secret
from sipsilo.config import Config
from sipsilo.control.server import ControlServer, Handler
from sipsilo.db.url import mask_url
from sipsilo.ops.supervised import SupervisorOps
from sipsilo.registrar.replicated import ReplicatedLocation
from sipsilo.silo.backend import open_configured
from sipsilo.sip import core_build
from sipsilo.sip.ids import new_token
from sipsilo.sip.uri import format_host
from sipsilo.transport import loop as event_loop
from sipsilo.transport import worker_link as wl
from sipsilo.transport.tcp import bind_streams
from sipsilo.transport.udp import bind_udp
from sipsilo.workers.auth_link import AuthTable
from sipsilo.workers.keys import worker_for

log = logging.getLogger("sipsilo.supervisor")

SPEC_ENV = "SIPSILO_WORKER"
START_TIMEOUT = 30.0
# A worker that dies is replaced, unless more than MAX_RESTARTS died within
# RESTART_WINDOW seconds: then the server stops (exit 1) for its process manager.
MAX_RESTARTS = 3
RESTART_WINDOW = 60.0
# Stats that every worker reports alike (a database count, the replicated
# location table): shown once, not added up.
_SHARED_STATS = frozenset({"msilo:stored_rows", "usrloc:registered_contacts"})


def worker_control_path(base: Path, index: int) -> Path:
    return base.with_name(f"{base.name}.{index}")


class WorkerStartError(Exception):
    """A worker process did not come up (its own log lines say why)."""


class _Reader(asyncio.DatagramProtocol):
    """One listening socket: every datagram to its worker."""

    def __init__(self, sup: Supervisor, index: int) -> None:
        self._sup = sup
        self._index = index

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._sup.dispatch(self._index, data, str(addr[0]), int(addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.n = config.server.workers
        self.token = new_token()
        self.stopping = asyncio.Event()
        self.failed = False
        self.dropped = 0
        self._socks: list[socket.socket] = []
        self._links: list[socket.socket] = []
        self._reliable: list[wl.ReliableFrames] = []  # per link, for location changes
        self._procs: list[subprocess.Popen[bytes]] = []
        self._ready: set[int] = set()
        self._all_ready = asyncio.Event()
        self._handed_over = False  # the workers have their sockets
        self._transports: list[asyncio.BaseTransport] = []
        self._streams: list[list[socket.socket]] = []  # per stream listener, one per worker
        self._deaths: list[float] = []  # when workers died lately (monotonic)
        self._replacing: set[asyncio.Future[None]] = set()  # _replace tasks running
        # The location table as the workers replicate it (registrar.replicated),
        # for a worker started in place of one that died.
        self.location = None if config.registrar.db_url else ReplicatedLocation(lambda _: None)
        self.control: ControlServer | None = None
        # One authentication replay/failure table for every worker, unless Redis
        # holds it for every instance (workers.auth_link).
        self.auth: AuthTable | None = None
        if config.cluster.redis_url is None and config.auth.enabled is not False:
            self.auth = AuthTable(load_secret(config.data_dir), config.auth_realm(),
                                  nonce_expires=config.auth.nonce_expires,
                                  max_failures=config.auth.max_failures,
                                  block_time=config.auth.block_time)
        self._expiry: asyncio.Task[None] | None = None
        self.ops = SupervisorOps(self)
        self.control_handlers: dict[str, Handler] = {
            "stats": self._stats, "location.list": self._location_list, **self.ops.handlers()}

    # ------------------------------------------------------------- start-up
    async def start(self) -> None:
        cfg = self.config
        # Create or migrate the schema once, here: N workers opening a new
        # SQLite file at the same moment would race to set it up.
        store = await open_configured(cfg.msilo_db, cfg.msilo.db_table, 1, 1)
        await store.close()
        loop = asyncio.get_running_loop()
        for i in range(self.n):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            wl.tune(ours)
            self._links.append(ours)
            self._reliable.append(wl.ReliableFrames(ours))
            self._procs.append(self._spawn(i, ours, theirs))
            theirs.close()
            loop.add_reader(ours.fileno(), self._from_worker, i)
        ready = asyncio.ensure_future(self._all_ready.wait())
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({ready, stop}, timeout=START_TIMEOUT,
                           return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        stop.cancel()
        if self.failed:
            raise WorkerStartError(
                "a worker process exited during start-up; see its log lines above")
        if self.stopping.is_set():
            return  # SIGTERM/SIGINT while starting: stop quietly
        if not self._all_ready.is_set():
            raise WorkerStartError(
                f"only {len(self._ready)} of {self.n} worker processes started "
                f"within {START_TIMEOUT:.0f} s; see their log lines above")
        # Bound only now, with every worker ready: whoever waits for the port
        # (a service manager, a benchmark) never sends into a server that is
        # still starting. Each worker gets the sockets over its link.
        udp = [a for a in cfg.server.listen if a.proto == "udp"]
        streams = [a for a in cfg.server.listen if a.proto != "udp"]
        for addr in udp:
            self._socks.append(bind_udp(addr.host, addr.port))
        # Stream listeners: one SO_REUSEPORT socket per worker, which accepts
        # its own connections (transport.tcp.bind_streams); not read here.
        # Kept open here: a worker started in place of one that died takes over
        # its sockets, and connections that arrived meanwhile wait in them.
        self._streams = [bind_streams(a.host, a.port, self.n, a.proto) for a in streams]
        for i in range(self.n):
            self._send_sockets(i)
        self._handed_over = True
        ports = [(a, s.getsockname()[1]) for a, s in zip(udp, self._socks, strict=True)]
        ports += [(a, socks[0].getsockname()[1])
                  for a, socks in zip(streams, self._streams, strict=True)]
        for i, sock in enumerate(self._socks):
            transport, _ = await loop.create_datagram_endpoint(
                lambda i=i: _Reader(self, i), sock=sock)  # type: ignore[misc]
            self._transports.append(transport)
        if self.auth is not None:
            self._expiry = asyncio.create_task(self._forget_expired_nonces(self.auth))
        self.control = ControlServer(cfg.control_socket_path(), self.control_handlers)
        try:
            await self.control.start()
        except OSError as exc:
            log.warning("control channel %s not available: %s", cfg.control_socket_path(), exc)
        await self.ops.start()  # HTTP endpoint, SIGHUP
        listening = ", ".join(f"{a.proto}:{format_host(a.host)}:{port}" for a, port in ports)
        log.info("sipsilo %s (%s) listening on %s with %d worker processes; silo %s (table %s)",
                 __version__, core_build(), listening, self.n, mask_url(cfg.msilo.db_url),
                 cfg.msilo.db_table)

    def _send_sockets(self, index: int) -> None:
        """Worker *index*'s listening sockets: every UDP one, its own stream ones."""
        fds = [s.fileno() for s in self._socks]
        wl.send_sockets(self._links[index], fds + [socks[index].fileno()
                                                   for socks in self._streams])

    def _spawn(
        self, index: int, ours: socket.socket, theirs: socket.socket
    ) -> subprocess.Popen[bytes]:
        # The configuration goes over the link, not in the environment: it may
        # hold database passwords, and /proc/<pid>/environ keeps what a
        # process was started with.
        spec = {
            "index": index,
            "workers": self.n,
            "token": self.token,
            "data_dir": str(self.config.data_dir),
            "config": self.config.model_dump_json(),
        }
        ours.send(bytes((wl.SPEC,)) + json.dumps(spec).encode())
        env = dict(os.environ)
        env[SPEC_ENV] = str(theirs.fileno())
        return subprocess.Popen(
            [sys.executable, "-m", "sipsilo.worker_main"], pass_fds=[theirs.fileno()], env=env,
        )

    # --------------------------------------------------------------- traffic
    def dispatch(self, listener: int, data: bytes, host: str, port: int) -> None:
        index = worker_for(data, self.n, self.token)
        if self._reliable[index].busy:
            self.dropped += 1  # location changes first: that worker is behind anyway
            return
        try:
            self._links[index].sendmsg(wl.sip_frame(listener, host, port, data))
        except BlockingIOError:
            # The worker is that far behind: the datagram is lost as on a
            # full socket buffer, and the sender's retransmission comes later.
            self.dropped += 1
        except OSError as exc:
            log.debug("worker %d link: %s", index, exc)

    def _from_worker(self, index: int) -> None:
        link = self._links[index]
        for _ in range(64):
            try:
                frame = link.recv(wl.MAX_FRAME)
            except BlockingIOError:
                return
            except OSError:
                frame = b""
            if not frame:
                asyncio.get_running_loop().remove_reader(link.fileno())
                self._lost(index)
                return
            kind = frame[0]
            if kind == wl.QUESTION:
                answer = self.auth.answer(frame[5:]) if self.auth is not None else b"null"
                self._reliable[index].send(bytes((wl.ANSWER,)) + frame[1:5] + answer)
            elif kind == wl.LOCATION:
                for j, reliable in enumerate(self._reliable):
                    if j != index:
                        reliable.send(frame)
                if self.location is not None:
                    try:
                        self.location.apply(frame[1:])
                    except Exception:
                        log.exception("location change not kept for a restarted worker")
            elif kind == wl.READY and self._handed_over:
                self._restarted(index)
            elif kind == wl.READY:
                self._ready.add(index)
                if len(self._ready) == self.n:
                    self._all_ready.set()

    @staticmethod
    async def _forget_expired_nonces(table: AuthTable) -> None:
        while True:
            await asyncio.sleep(1.0)
            table.nonces.forget_expired(time.time())

    def _lost(self, index: int) -> None:
        if self.stopping.is_set():
            return
        # Nothing more goes to the dead one (a snapshot still queued for it
        # included: its then() must not hand sockets to a closed link).
        self._reliable[index].close()
        task = asyncio.ensure_future(self._replace(index))
        self._replacing.add(task)
        task.add_done_callback(self._replaced)

    def _replaced(self, task: asyncio.Future[None]) -> None:
        self._replacing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a worker could not be started again: %s", task.exception())

    async def _replace(self, index: int) -> None:
        """A worker's link closed: it died. Started again in its place, unless
        it died at start-up or too often."""
        proc = self._procs[index]
        # Its link closes a moment before the process is gone: its exit status
        # is for the log line, awaited without holding up the datagrams of the
        # other workers, which this loop hands out.
        deadline = time.monotonic() + 0.5
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.stopping.is_set():
            return
        code = proc.poll()
        status = code if code is not None else "unknown"
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
        if not self._handed_over or len(self._deaths) > MAX_RESTARTS:
            # Dying at start-up, or again and again: not something a new
            # process cures; the process manager sees the exit status.
            log.error("worker %d exited unexpectedly (status %s); stopping the server",
                      index, status)
            self.failed = True
            self.stopping.set()
            return
        log.error("worker %d exited unexpectedly (status %s); starting a new one", index, status)
        self._links[index].close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        wl.tune(ours)
        self._links[index] = ours
        self._reliable[index] = wl.ReliableFrames(ours)
        self._procs[index] = self._spawn(index, ours, theirs)
        theirs.close()
        asyncio.get_running_loop().add_reader(ours.fileno(), self._from_worker, index)

    def _restarted(self, index: int) -> None:
        """A worker started in place of a dead one is ready: the location table
        as it stands, then its sockets."""
        reliable = self._reliable[index]
        if self.location is not None:
            for change in self.location.snapshot(time.time()):
                reliable.send(bytes((wl.LOCATION,)) + change)

        def sockets() -> None:
            try:
                self._send_sockets(index)
            except OSError as exc:
                log.error("worker %d did not get its sockets: %s", index, exc)
                return
            log.info("worker %d restarted", index)

        # Behind the whole snapshot: with its sockets, the worker starts serving.
        reliable.then(sockets)

    # ------------------------------------------------------------- shut-down
    async def stop(self) -> None:
        """SIGTERM the workers, keep moving their datagrams until they are gone."""
        await self.ops.aclose()
        if not self._handed_over:
            # Start-up failed (a port in use...): workers still waiting for their
            # sockets read end-of-file and give up at once.
            for reliable in self._reliable:
                reliable.close()
            for link in self._links:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_reader(link.fileno())
                link.close()
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        if self.control is not None:
            await self.control.aclose()
        if self._expiry is not None:
            self._expiry.cancel()
        # A worker's own stop waits up to fr_timer + 1 s twice (deliveries, then
        # request handlers); a little on top for its start-up and shut-down.
        deadline = time.monotonic() + 2 * (self.config.tm.fr_timer + 1.0) + 5.0
        while any(p.poll() is None for p in self._procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for i, proc in enumerate(self._procs):
            if proc.poll() is None:
                log.error("worker %d did not stop in time; killed", i)
                proc.kill()
                proc.wait()
        loop = asyncio.get_running_loop()
        for reliable in self._reliable:
            reliable.close()
        for link in self._links:
            if link.fileno() >= 0:
                with contextlib.suppress(Exception):
                    loop.remove_reader(link.fileno())
                link.close()
        for transport in self._transports:
            transport.close()
        for sock in self._socks:
            sock.close()
        for socks in self._streams:
            for sock in socks:
                sock.close()
        if self.dropped:
            log.info("%d datagrams were dropped because a worker fell behind", self.dropped)

    # --------------------------------------------------------- control channel
    async def _ask(self, index: int, message: dict[str, Any]) -> Any:
        path = worker_control_path(self.config.control_socket_path(), index)
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 5.0)
        finally:
            writer.close()
        reply = json.loads(line or b"{}")
        if "error" in reply:
            raise RuntimeError(f"worker {index}: {reply['error']}")
        return reply.get("result")

    async def _stats(self, message: dict[str, Any]) -> dict[str, Any]:
        replies = await asyncio.gather(*(self._ask(i, message) for i in range(self.n)))
        return merge_stats(replies, self.dropped)

    async def _location_list(self, message: dict[str, Any]) -> Any:
        # Every worker holds the whole table (registrar.replicated, or SQL).
        return await self._ask(0, message)


def merge_stats(replies: list[dict[str, Any]], dropped: int = 0) -> dict[str, Any]:
    """The workers' stats as one server's: counts added up, maxima the largest."""
    out: dict[str, Any] = {}
    for reply in replies:
        for key, value in reply.items():
            if key not in out:
                out[key] = value
            elif key in _SHARED_STATS or not isinstance(value, int | float):
                continue
            elif "max" in key:
                out[key] = max(out[key], value)
            else:
                out[key] += value
    out["server:workers"] = len(replies)
    out["server:dropped_datagrams"] = dropped
    return out


async def supervise(config: Config) -> int:
    """Run until SIGTERM/SIGINT; the exit status of `sipsilo serve`."""
    sup = Supervisor(config)
    event_loop.stop_on_signals(sup.stopping)
    try:
        await sup.start()
        await sup.stopping.wait()
    finally:
        log.info("shutting down")
        await sup.stop()
    return 1 if sup.failed else 0

"""Wiring: configuration in, a running server out.

Builds each layer from the configuration, connects them in the one direction
data flows (transport → stack → routing → registrar/silo/proxy → transport),
runs the periodic jobs (binding expiry, msilo's check_time/clean_period
sweep), and shuts down in reverse order on SIGTERM/SIGINT so that no claim is
left held and no accepted message is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import logging
import math
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from sipsilo import __version__
from sipsilo.auth import start_auth
from sipsilo.auth.nonce import load_secret
from sipsilo.config import Config, ConfigError
from sipsilo.control.server import ControlServer
from sipsilo.db.errors import StoreError, StoreUnavailable
from sipsilo.db.url import mask_url
from sipsilo.metrics import Counters
from sipsilo.ops.logs import flush_logging, setup_logging
from sipsilo.ops.reload import ReloadHook
from sipsilo.proxy.relay import Relay
from sipsilo.proxy.route_token import RouteKeys
from sipsilo.registrar.location import LocationService
from sipsilo.registrar.registrar import Registrar
from sipsilo.registrar.replicated import ReplicatedLocation
from sipsilo.registrar.sql_location import SqlLocationService, open_location
from sipsilo.routing.dispatch import Dispatcher
from sipsilo.routing.handover import FlowOwner
from sipsilo.routing.loader import load_route
from sipsilo.routing.services import Services
from sipsilo.silo.backend import open_configured
from sipsilo.silo.cluster import Heartbeat
from sipsilo.silo.delivery import DeliveryEngine
from sipsilo.sip import core_build
from sipsilo.sip.uri import canonical_host, format_host
from sipsilo.stack.core import SipStack
from sipsilo.transaction.timers import TimerConfig
from sipsilo.transport import loop as event_loop
from sipsilo.transport.manager import ListenSpec, Transports
from sipsilo.transport.stream import StreamLimits, hop_limits
from sipsilo.transport.tls import TlsContexts, TlsSetupError
from sipsilo.transport.worker_link import WorkerLink
from sipsilo.workers.auth_link import LinkState
from sipsilo.workers.keys import tag_for
from sipsilo.workers.supervisor import worker_control_path

if TYPE_CHECKING:
    from sipsilo.push.service import PushService
    from sipsilo.push.store import PushStore
    from sipsilo.silo.store import SiloStore
    from sipsilo.workers.worker import WorkerContext

log = logging.getLogger("sipsilo")


def run(config: Config, worker: WorkerContext | None = None) -> int:
    """Run the server until SIGTERM/SIGINT (the `sipsilo serve` command).

    With ``[server] workers`` > 1 this process becomes the supervisor of that
    many worker processes (workers.supervisor), each of which comes back here
    with its *worker* context. Returns the exit status.
    """
    setup_logging(config.server.log_level, config.server.log_format,
                  "" if worker is None else worker.name)
    try:
        if worker is None and config.server.workers > 1:
            from sipsilo.workers.supervisor import supervise

            return event_loop.run(supervise(config))
        # A SIP server makes many short-lived objects per request and few
        # long-lived cycles: collect the young generation less often, and keep
        # the objects built at start-up out of every collection.
        gc.set_threshold(20000, 20, 50)
        event_loop.run(serve(config, worker))
        return 0
    finally:
        # Logging is written by a thread: every line out before the caller prints
        # an error line or the process exits.
        flush_logging()


class Server:
    """A running sipsilo: every component, started and stopped together."""

    def __init__(self, config: Config, worker: WorkerContext | None = None) -> None:
        self.config = config
        self.worker = worker
        self.orphaned = False
        self.counters = Counters()
        self.stopping = asyncio.Event()
        self._jobs: list[asyncio.Task[None]] = []
        # Run on SIGHUP with (old, new) configuration after the built-in reloads
        # (sipsilo.ops.reload); a listener holding files (TLS certificates) adds one.
        self.reload_hooks: list[ReloadHook] = []
        self.http: Any = None  # (HttpServer, Api) when [http] listen is set
        # This process's row among the instances on one database (silo.cluster).
        self.heartbeat: Heartbeat | None = None

    async def start(self) -> None:
        cfg = self.config
        worker = self.worker
        link = None
        if worker is not None:
            link = worker.link = WorkerLink(worker.link_sock, self._orphaned)
        route = load_route(cfg.server.route)
        # A database that cannot be reached is one line naming the key, not a traceback.
        self.store = await open_configured(cfg.msilo_db, cfg.msilo.db_table,
                                           cfg.msilo.db_pool_min, cfg.msilo.db_pool_max)
        # This process's name among the instances on one database: delivery
        # claims, heartbeat row, bindings (silo.cluster). Stable across restarts
        # of this instance (host, data dir, SIP port, unless [cluster]
        # instance_id says otherwise): after a crash it takes back what it held
        # at once instead of leaving the users' messages blocked until the
        # leases lapse.
        first = cfg.server.listen[0]
        place = hashlib.sha1(str(cfg.data_dir).encode()).hexdigest()[:8]
        owner = cfg.cluster.instance_id or f"{_host_name()}:{first.port}:{place}"
        if worker is not None:
            owner += f"/{worker.name}"
        if link is not None and not cfg.registrar.db_url:
            # Every worker holds every binding: see registrar.replicated.
            replicated = ReplicatedLocation(link.publish_location)
            link.on_location = replicated.apply
            self.location: LocationService = replicated
        else:
            self.location = await open_location(cfg, owner)
        domains = {canonical_host(d) for d in cfg.server.effective_domains()}
        self.registrar = Registrar(
            self.location,
            cfg.registrar.default_expires,
            cfg.registrar.min_expires,
            cfg.registrar.max_expires,
            domains=lambda host: canonical_host(host) in domains,
            max_contacts=cfg.registrar.max_contacts,
        )
        timers = TimerConfig(
            fr_timer=cfg.tm.fr_timer, fr_inv_timer=cfg.tm.fr_inv_timer, wt_timer=cfg.tm.wt_timer
        )
        server_header = cfg.server.user_agent or None
        tls = _tls_contexts(cfg)

        limits = StreamLimits(
            max_connections=cfg.server.tcp_max_connections,
            max_connections_per_ip=cfg.server.tcp_max_connections_per_ip,
            idle_timeout=cfg.server.tcp_idle_timeout,
            message_timeout=cfg.server.tcp_message_timeout,
            max_header_size=min(cfg.server.max_header_size, cfg.server.max_message_size),
            answer_timeout=max(cfg.tm.fr_timer, cfg.tm.fr_inv_timer) + 1.0,
        )

        def transports(stack: SipStack) -> Transports:
            made = Transports(
                [ListenSpec(a.proto, a.host, a.port) for a in cfg.server.listen],
                stack.receive,
                stack.on_framing_error,
                cfg.server.max_message_size,
                advertise=cfg.server.advertise_address(),
                limits=limits,
                # The private hop listener's own budget (routing.handover).
                hop_limits=hop_limits(limits, cfg.server.workers),
                shared_udp=None if worker is None else [],
                tls=tls,
                ws_origins=cfg.websocket.allowed_origins,
            )
            made.tcp.on_closed = stack.connection_closed
            return made

        # With workers: one branch token for all (a request looping through two
        # of them is still a loop); the tag brings responses back to this one.
        self.stack = SipStack(
            transports, timers, self._on_request,
            on_stray_ack=self._on_stray_ack, on_stray_response=self._on_stray_response,
            server_header=server_header,
            branch_token=None if worker is None else worker.token,
            branch_tag="" if worker is None else tag_for(worker.index),
        )
        self.transports = self.stack.transports
        # A claim must outlive the longest delivery attempt (fr_timer), or a
        # second instance could retake a message that is still in flight.
        claim_ttl = max(cfg.msilo.claim_ttl, 2 * math.ceil(cfg.tm.fr_timer) + 10)
        self.relay = Relay(self.stack)
        self.delivery = DeliveryEngine(
            self.store, self.stack.send_request, owner, self.counters,
            add_date=bool(cfg.msilo.add_date), claim_ttl=claim_ttl, user_agent=server_header,
            send_budget=cfg.tm.fr_timer,
        )
        self.services = Services(
            config=cfg, stack=self.stack, registrar=self.registrar, location=self.location,
            store=self.store, delivery=self.delivery, relay=self.relay, counters=self.counters,
            server_header=server_header, domains=domains,
            route_keys=RouteKeys(load_secret(cfg.data_dir), cfg.proxy.route_token_lifetime),
            handover=FlowOwner(load_secret(cfg.data_dir)),
        )
        self.relay.stamp = self.services.stamp_response
        self._claim_owner = owner
        self.services.push_store, self.services.push = await _start_push(
            cfg, self.store, self.counters)
        # Before the transports start: no request is routed while auth is undecided.
        # Workers without Redis share the supervisor's replay and failure tables.
        shared = LinkState(link) if link is not None and cfg.cluster.redis_url is None else None
        setup = await start_auth(cfg, shared)
        self.services.auth, self.services.auth_auto = setup.auth, setup.auto
        self.subscribers = setup.subscribers
        self.auth_state = setup.state
        self.dispatcher = Dispatcher(self.services, route)
        if link is not None:
            # Ready but for the sockets: the supervisor binds them once every
            # worker got here, and hands them over.
            self.transports.share_sockets(link.handshake())
        # Before any request comes in: a REGISTER's dump would skip the rows an
        # earlier process of ours still holds and deliver the later ones first.
        interrupted = await self.store.claimed_for(owner)
        released = await self.store.release_owner(owner)
        if released:
            log.info("took back %d delivery claims held before a restart", released)
        # Our own ports, for requests that arrive while the listeners start
        # (the real ones, port 0 resolved, once they are up).
        self.services.listen_ports = {a.port for a in cfg.server.listen if a.port}
        # With workers and stream listeners: a private listener the other
        # workers hand requests for our connections to (routing.handover); with
        # [cluster] advertise, on that address, for the other instances too.
        hop = cfg.cluster.hop_address()
        if hop is not None and hop[1] and worker is not None:
            hop = (hop[0], hop[1] + worker.index)
        streams = any(a.proto != "udp" for a in cfg.server.listen)
        if streams and (hop is not None or worker is not None):
            # Before the public listeners: every stream flow a REGISTER leaves
            # in the bindings must name its owner from the first one on. The tag
            # tells our flows from a dead process's on the same address: a fixed
            # one ([cluster] advertise), or an ephemeral port that came round again.
            self.services.handover.listen(
                *await self.transports.open_private(hop), tag=secrets.token_hex(4))
        await self.transports.start()
        self.heartbeat = await _start_heartbeat(self.location, owner, self.services.handover.uri)
        if link is not None:
            link.start(self.transports.udp)
        self.services.listen_ports = {port for _, _, port in self.transports.bound()}
        control_path = cfg.control_socket_path()
        if worker is not None:
            control_path = worker_control_path(control_path, worker.index)
        from sipsilo.ops import runtime

        handlers = {"stats": self._stats, "location.list": self._location_list,
                    **runtime.control_handlers(self)}
        self.control = ControlServer(control_path, handlers)
        try:
            await self.control.start()
        except OSError as exc:
            log.warning("control channel %s not available: %s", control_path, exc)
        if worker is None:  # with workers, the supervisor serves HTTP
            self.http = await runtime.start_http(cfg, runtime.ServerBackend(self, handlers))
        self._jobs = [
            asyncio.create_task(self._expire_bindings()),
            asyncio.create_task(self._msilo_timer()),
        ]
        if interrupted:
            # Their users may still be registered (the other workers kept the
            # bindings, or they live in SQL): deliver now, not at their next REGISTER.
            self._jobs.append(asyncio.create_task(self._resume_dumps(interrupted)))
        if self.heartbeat is not None:
            self._jobs.append(asyncio.create_task(self._heartbeat()))
        if self.services.push_store is not None and cfg.msilo.reminder:
            self._jobs.append(asyncio.create_task(self._reminder_timer()))
        gc.collect()
        gc.freeze()
        if worker is not None:
            log.debug("worker %d of %d ready", worker.index, worker.workers)
            return
        listening = ", ".join(f"{p}:{format_host(h)}:{n}"
                              for p, h, n in self.transports.bound())
        log.info("sipsilo %s (%s) listening on %s; silo %s (table %s)", __version__,
                 core_build(), listening, mask_url(cfg.msilo.db_url), cfg.msilo.db_table)
        if cfg.msilo.registrar:
            log.info("offline notices are sent from %s", cfg.msilo.registrar)

    def reload_certificates(self) -> bool:
        """Re-read the TLS certificate and key (SIGHUP): used for new
        connections from now on; open connections keep theirs."""
        transports: Transports | None = getattr(self, "transports", None)
        if transports is None or transports.tls is None:
            return False
        return transports.tls.reload()

    def _orphaned(self) -> None:
        """The supervisor has gone (killed): no answer can reach this worker any
        more, so waiting for deliveries in flight is pointless. Stop at once;
        their claims are released and the next server delivers them."""
        log.error("supervisor gone; stopping now")
        self.orphaned = True
        self.stopping.set()

    # The stack is built before the dispatcher (which needs the stack's
    # services): these hand its input on. No input arrives before the
    # transports start, by which time the dispatcher exists.
    def _on_request(self, tx: Any) -> Any:
        return self.dispatcher.on_request(tx)

    def _on_stray_ack(self, ack: Any, flow: Any) -> Any:
        return self.dispatcher.on_stray_ack(ack, flow)

    def _on_stray_response(self, response: Any, flow: Any) -> Any:
        return self.dispatcher.on_stray_response(response, flow)

    async def stop(self) -> None:
        """Stop in reverse order; tolerates a start() that failed part-way."""
        log.info("shutting down")
        # Sockets close last: an in-flight delivery must still get its 2xx (or
        # the message is delivered again after the restart), and a MESSAGE
        # being stored its 202 (or the sender retransmits it to the restarted
        # server, which stores it twice). So: no new dump starts, the dumps
        # in flight finish their message, the request handlers finish, and
        # only then do the transports close. Both waits are bounded.
        # A delivery in flight gets its full fr_timer: released earlier, a
        # message the phone then answers would be delivered again after restart.
        grace = 0.0 if self.orphaned else self.config.tm.fr_timer + 1.0
        if self.http is not None:
            await self.http[0].aclose()
        delivery = getattr(self, "delivery", None)
        if delivery is not None:
            delivery.stop_starting()
            await delivery.aclose(timeout=grace)
        stack = getattr(self, "stack", None)
        if stack is not None:
            await _drain(stack, grace)
        if hasattr(self, "transports"):
            self.transports.close()
        if self.worker is not None and self.worker.link is not None:
            self.worker.link.close()
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        push = getattr(getattr(self, "services", None), "push", None)
        if push is not None:
            await push.aclose()
        push_store = getattr(getattr(self, "services", None), "push_store", None)
        if push_store is not None:
            await push_store.close()
        for name in ("delivery", "services", "stack", "control"):
            component = getattr(self, name, None)
            if component is not None:
                await component.aclose()
        if hasattr(self, "store"):
            await self.store.close()
        if self.heartbeat is not None:
            try:
                await self.heartbeat.leave()
            except StoreError as exc:
                log.warning("heartbeat row not removed: %s", exc)
        close_location = getattr(getattr(self, "location", None), "aclose", None)
        if close_location is not None:  # a SQL location service's pool
            await close_location()
        subscribers = getattr(self, "subscribers", None)
        if subscribers is not None:
            await subscribers.aclose()
        auth_state = getattr(self, "auth_state", None)
        if auth_state is not None:
            await auth_state.aclose()

    async def reload(self) -> None:
        """SIGHUP: read the configuration again, apply what can change (ops.reload)."""
        from sipsilo.config import ConfigError
        from sipsilo.ops import runtime
        from sipsilo.ops.reload import reload_server

        if not hasattr(self, "dispatcher"):
            log.warning("SIGHUP during start-up ignored; send it again once the server runs")
            return
        # A renewed certificate at the same path is taken whatever else the file says.
        self.reload_certificates()
        try:
            new = self.config.reload()
        except ConfigError as exc:
            log.error("configuration not reloaded: %s", exc.detail)
            return
        await reload_server(self, new)
        runtime.reload_token(None if self.http is None else self.http[1], self.config)

    # ------------------------------------------------------------ periodic jobs
    async def _expire_bindings(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.services.auth is not None:
                self.services.auth.nonces.forget_expired(time.time())
            try:
                expired = await self.location.expire(time.time())
                if self.worker is not None and self.worker.index:
                    continue  # every worker expires its copy; the first one says so
                for binding in expired:
                    log.info("binding %s of %s expired", binding.contact, binding.aor)
            except Exception:
                log.exception("binding expiry failed")

    async def _heartbeat(self) -> None:
        """This process's row in the shared database, every heartbeat_interval."""
        assert self.heartbeat is not None
        while True:
            await asyncio.sleep(self.config.cluster.heartbeat_interval)
            try:
                await self.heartbeat.beat()
            except StoreError as exc:
                log.warning("heartbeat not written: %s", exc)

    async def _reminder_timer(self) -> None:
        """Reminders due are sent every check_time (as Kamailio's msilo timer does)."""
        from sipsilo.routing.reminders import send_due

        store = self.services.push_store
        assert store is not None
        while True:
            await asyncio.sleep(self.config.msilo.check_time)
            try:
                await send_due(self.services, store, self._claim_owner)
            except Exception as exc:
                log.warning("sending reminders failed: %s", exc)

    async def _resume_dumps(self, accounts: list[tuple[str, str]]) -> None:
        resumed = await self.services.resume_dumps(accounts)
        log.info("resumed %d of %d dumps an earlier process left unfinished",
                 resumed, len(accounts))

    async def _msilo_timer(self) -> None:
        """msilo's timer: every check_time; purge expired every clean_period ticks."""
        msilo = self.config.msilo
        tick = 0
        while True:
            await asyncio.sleep(msilo.check_time)
            tick += 1
            if tick % msilo.clean_period:
                continue
            try:
                purged = await self.store.purge_expired(int(time.time()))
            except Exception as exc:
                log.warning("expired-message purge failed: %s", exc)
                continue
            if purged:
                self.counters.inc("expired_messages", purged)
                log.info("purged %d expired messages", purged)

    # ---------------------------------------------------------- control channel
    async def _stats(self, _: dict[str, Any]) -> dict[str, Any]:
        stats = {f"msilo:{k}": v for k, v in self.counters.snapshot().items()}
        stats.update({f"sip:{k}": v for k, v in self.stack.counters.items()})
        stats["sip:live_transactions"] = self.stack.live_transactions
        tcp = self.transports.tcp
        stats["tcp:open_connections"] = len(tcp)
        stats["tcp:refused_connections"] = tcp.refusals.total
        stats["tcp:hop_connections"] = tcp.hop_connections
        stats["tcp:hop_refused_connections"] = tcp.hop_refusals.total
        stats["tcp:hop_evicted_connections"] = tcp.hop_evicted
        stats["tcp:deadline_closed_connections"] = tcp.overdue_closed
        stats["msilo:active_deliveries"] = self.delivery.active
        stats["msilo:stored_rows"] = await self.store.count()
        stats["usrloc:registered_contacts"] = len(await self.location.list(None, time.time()))
        stats.update({f"store:{k}": v for k, v in dataclasses.asdict(self.store.stats).items()})
        return stats

    async def _location_list(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for b in await self.location.list(message.get("aor"), now):
            out.append({
                "aor": b.aor, "contact": b.contact, "expires": b.remaining(now), "q": b.q,
                "received": f"{b.flow.transport}:{b.flow.remote[0]}:{b.flow.remote[1]}",
                "user_agent": b.user_agent,
                "methods": sorted(b.methods) if b.methods is not None else None,
            })
        return out


def _host_name(limit: int = 40) -> str:
    """This host's name as claim owners carry it: at most *limit* characters,
    and two long names that differ only past the limit (replicas of one
    deployment) still give two names: the tail is a digest of the whole."""
    name = socket.gethostname()
    if len(name) <= limit:
        return name
    return name[:limit - 9] + "~" + hashlib.sha1(name.encode()).hexdigest()[:8]


def _tls_contexts(cfg: Config) -> TlsContexts:
    """The TLS contexts; a file that changed since the configuration was checked
    is still one line naming its key."""
    try:
        return TlsContexts(cfg.tls.settings(cfg.data_dir), need_server=cfg.uses_tls())
    except TlsSetupError as exc:
        raise ConfigError(f"{exc.key}: {exc}") from None


async def _drain(stack: SipStack, timeout: float) -> None:
    """Wait (bounded) for the request handlers running now and any they start."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        tasks: set[asyncio.Task[Any]] = set(getattr(stack, "_tasks", ()))
        tasks.discard(asyncio.current_task())
        left = deadline - asyncio.get_running_loop().time()
        if not tasks or left <= 0:
            return
        await asyncio.wait(tasks, timeout=left)


async def serve(config: Config, worker: WorkerContext | None = None) -> None:
    from sipsilo.ops import runtime

    server = Server(config, worker)
    event_loop.stop_on_signals(server.stopping)
    if worker is None:
        runtime.on_sighup(server.reload)
    else:
        runtime.ignore_sighup()
    try:
        await server.start()
        await server.stopping.wait()
    finally:
        await server.stop()


async def _start_heartbeat(location: LocationService, name: str, hop: str | None
                           ) -> Heartbeat | None:
    """The heartbeat row (silo.cluster) when bindings live in a shared database."""
    if not isinstance(location, SqlLocationService):
        return None
    beat = Heartbeat(location.pool, name, hop, __version__)
    try:
        await beat.open()
    except StoreError as exc:
        log.warning("heartbeat table not available: %s", exc)
        return None
    return beat


async def _start_push(cfg: Config, store: SiloStore, counters: Counters
                      ) -> tuple[PushStore | None, PushService | None]:
    """The SQL of push targets and reminders when either is configured (in the message
    store's database), and the push service when a pusher is configured ([push])."""
    from sipsilo.push.service import PushService
    from sipsilo.push.store import PushStore

    pc = cfg.push
    pushing = bool(pc.webhook_url or pc.vapid_private_key or pc.fcm_credentials
                   or pc.apns_key_file)
    if not pushing and not cfg.msilo.reminder:
        return None, None
    sql = PushStore(cfg.msilo_db, cfg.msilo.db_table, cfg.data_dir, pc.keep_days)
    try:
        await sql.open()
    except StoreUnavailable as exc:
        raise StoreUnavailable(f"msilo.db_url (push targets): {exc}") from None
    if not pushing:
        return sql, None

    async def waiting(user: str, domain: str) -> int:
        return await store.count_for(user, domain, int(time.time()))

    service = PushService(pc, sql, waiting, counters, cfg.data_dir)
    await service.open()
    return sql, service

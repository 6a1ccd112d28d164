"""The delivery engine: stored messages out to a user who just registered.

Rules, each for a reason:

* One message at a time per user, in stored order (RFC 3428 §8): the next
  MESSAGE leaves only after the previous one got its final response, so the
  user reads the conversation in the order it was written. Different users
  are served concurrently, each by its own worker task.
* A row is claimed in the database before it is sent, so that two REGISTERs
  at once, a second server on the same database, or a restart mid-dump never
  send it twice concurrently. A claim is a lease (`claim_ttl`): a crashed
  server's claims lapse and are retaken.
* A claim is renewed while the dump runs: before each message, once what is
  left of the lease is no more than one send can take (send_budget, the
  fr_timer) plus a second, every row this dump still holds gets a fresh lease. A slow UA
  (each message up to fr_timer) therefore never lets the later rows of a
  batch lapse to another instance mid-dump. A row whose lease was lost
  anyway is not sent; the dump ends there.
* A row is deleted only after a 2xx (or by the expiry purge). A temporary
  failure (timeout, transport failure, 3xx, 408, 480, 486, 491, 5xx other
  than 501/505/513) releases the claim, keeps the row and ends this dump:
  the rest waits for the next REGISTER rather than overtaking the message
  that failed. A permanent rejection (any other 4xx, 501/505/513, 6xx: the
  UA will never take that message) keeps the row too, but the dump goes on
  with the next messages: one bad message must not block the mailbox until
  it expires. The rejected row stays claimed by this dump (its own claims
  do not stop claim_batch, so it is skipped) and is released when the
  worker ends, for the next REGISTER.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sipsilo.flow import Target
from sipsilo.metrics import Counters
from sipsilo.silo.compose import delivery_request
from sipsilo.silo.store import SiloStore, StoredMessage, StoreError
from sipsilo.sip.message import Request, Response, failure_words
from sipsilo.sip.uri import SipUri

log = logging.getLogger(__name__)

Sender = Callable[[Request, Target], Awaitable[Response]]

# Rows claimed per database round trip during a dump. Small enough that a
# crash repeats few messages, large enough that the database is not the pace.
CLAIM_BATCH = 32


@dataclass(frozen=True)
class DeliveryTarget:
    """Where a user's messages go: the contact URI and how to reach it."""

    request_uri: SipUri
    target: Target


# Delivery answers after which the dump stops (the message is retried at the
# next REGISTER, the rest waits behind it). Every other failure is permanent.
# 430 Flow Failed (RFC 5626 §5.3): the connection the binding names is gone
# (the worker or instance holding it died): the phone registers again.
_TEMPORARY = frozenset({408, 430, 480, 486, 491})
_PERMANENT_5XX = frozenset({501, 505, 513})


def is_temporary(status: int) -> bool:
    """Is a non-2xx delivery answer worth retrying, order kept, at the next REGISTER?"""
    if 300 <= status < 400 or status in _TEMPORARY:
        return True
    return 500 <= status < 600 and status not in _PERMANENT_5XX


class _Worker:
    __slots__ = ("again", "confirming", "leased_at", "skipped", "target", "task")

    def __init__(self, target: DeliveryTarget) -> None:
        self.target = target
        self.again = False
        self.task: asyncio.Task[None] | None = None
        # Rows permanently rejected in this dump: kept claimed (so that this
        # dump's claims skip them) until the worker ends.
        self.skipped: list[int] = []
        # When the leases this worker holds were taken or last renewed.
        self.leased_at = 0.0
        # The deletion of the previous run's delivered rows, still running
        # while the next run is claimed and sent (see DeliveryEngine._deliver).
        self.confirming: asyncio.Future[None] | None = None


class DeliveryEngine:
    def __init__(
        self,
        store: SiloStore,
        send: Sender,
        owner: str,
        counters: Counters,
        *,
        add_date: bool = True,
        claim_ttl: int = 60,
        send_budget: float = 10.0,
        user_agent: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock  # POSIX seconds: leases, claims, wait times (a test's own clock)
        self._send = send
        self.owner = owner
        self._counters = counters
        self._add_date = add_date
        self._claim_ttl = claim_ttl
        self._send_budget = send_budget  # the longest one delivery can take (fr_timer)
        self._user_agent = user_agent
        self._workers: dict[tuple[str, str], _Worker] = {}
        self._retries: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._stopping = False

    def kick(self, username: str, domain: str, target: DeliveryTarget) -> None:
        """Start (or continue) delivering the account's messages to target."""
        key = (username, domain.lower())
        if self._stopping:  # shutting down: the next REGISTER after restart delivers
            return
        worker = self._workers.get(key)
        if worker is not None:
            # A dump is running: let it pick up the newest contact and look
            # again for rows once it runs dry (they may have been stored or
            # released meanwhile).
            worker.target = target
            worker.again = True
            return
        worker = _Worker(target)
        self._workers[key] = worker
        worker.task = asyncio.create_task(self._run(key, worker))

    @property
    def active(self) -> int:
        return len(self._workers)

    def busy(self, username: str, domain: str) -> bool:
        """Is a dump to this account running (a live MESSAGE must queue behind it)?"""
        return (username, domain.lower()) in self._workers

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def _run(self, key: tuple[str, str], worker: _Worker) -> None:
        username, domain = key
        try:
            while True:
                now = int(self._clock())
                try:
                    batch = await self._store.claim_batch(
                        username, domain, self.owner, now, self._claim_ttl, CLAIM_BATCH
                    )
                except StoreError as exc:
                    log.warning("cannot read messages of %s@%s: %s", username, domain, exc)
                    return
                if batch and not worker.skipped:
                    # The lease runs from the `now` the claim was written with.
                    worker.leased_at = now
                # A skipped row whose lease lapsed is claimed again: keep it, unsent.
                batch = [m for m in batch if m.id not in worker.skipped]
                if not batch:
                    if await self._confirmed(worker):
                        continue  # the last run's rows are settled now: look once more
                    if worker.again:
                        worker.again = False
                        continue
                    if self._stopping:
                        return
                    await self._retry_if_blocked(key, worker, now)
                    if worker.again:
                        # kicked while we looked (a message stored meanwhile):
                        # look again rather than leave it for the next REGISTER
                        worker.again = False
                        continue
                    return
                target = worker.target
                if not await self._deliver(batch, worker):
                    if worker.again and worker.target is not target and not self._stopping:
                        # The phone registered again (a new contact) while this
                        # run failed on the old one: the woken phone must not
                        # wait for yet another REGISTER.
                        worker.again = False
                        continue
                    return
        except Exception:
            # A bug, not a phone's answer: this dump ends (its claims were
            # released as tried), the next REGISTER starts another.
            log.exception("delivery to %s@%s stopped by an error", username, domain)
        finally:
            await self._confirmed(worker)
            if self._workers.get(key) is worker:
                del self._workers[key]
            if worker.skipped:
                await self._settle([], worker.skipped)

    async def _deliver(self, batch: list[StoredMessage], worker: _Worker) -> bool:
        """Send a claimed run one message at a time; False when the dump must end.

        Rows are deleted after their 2xx, together at the end of the run (one
        transaction instead of one per message): a crash in between may repeat
        those messages, with their Call-ID, never lose them.
        """
        delivered: list[int] = []
        go_on = True
        # The run ended by a shutdown (stop_starting, or cancelled while a
        # message waited for its answer): what is left was never tried.
        untried = False
        try:
            for msg in batch:
                if self._stopping:
                    go_on, untried = False, True
                    break
                if not await self._renew(batch, worker, msg):
                    go_on = False
                    break
                target = worker.target
                request = delivery_request(
                    msg, target.request_uri, add_date=self._add_date, user_agent=self._user_agent
                )
                response = await self._send(request, target.target)
                if 200 <= response.status < 300:
                    self._counters.inc("dumped_messages")
                    self._counters.observe("silo_wait_seconds", self._clock() - msg.inc_time)
                    delivered.append(msg.id)
                    if log.isEnabledFor(logging.INFO):  # built only when shown
                        log.info("delivered message %s for %s@%s to %s (%s)", msg.id,
                                 msg.username, msg.domain, target.request_uri, response.status,
                                 extra={"call_id": msg.callid or None, "message_id": msg.id,
                                        "user": f"{msg.username}@{msg.domain}"})
                    continue
                self._counters.inc("failed_messages")
                if is_temporary(response.status):
                    log.info(
                        "delivery of message %s failed: %s %s, a temporary failure;"
                        " it and the rest are kept for the next REGISTER",
                        msg.id, target.request_uri, failure_words(response),
                    )
                    go_on = False
                    break
                log.warning(
                    "delivery of message %s failed: %s %s, a permanent failure;"
                    " kept for the next REGISTER, delivering the next ones",
                    msg.id, target.request_uri, failure_words(response),
                )
                worker.skipped.append(msg.id)
        except asyncio.CancelledError:
            untried = True
            raise
        finally:
            # Also on cancellation (shutdown): settle what was claimed.
            done = set(delivered) | set(worker.skipped)
            rest = [m.id for m in batch if m.id not in done]
            await self._confirmed(worker)
            if go_on and not rest:
                # The whole run went: its rows are deleted while the next run is
                # claimed and sent (one database round trip less per run on the
                # way; the next claim skips rows this owner still holds).
                worker.confirming = asyncio.ensure_future(self._settle(delivered, []))
            else:
                await self._settle(delivered, rest, untried=untried)
        return go_on

    async def _confirmed(self, worker: _Worker) -> bool:
        """Wait for the previous run's deletion, if one is running; True if one was."""
        pending, worker.confirming = worker.confirming, None
        if pending is None:
            return False
        await asyncio.shield(pending)
        return True

    async def _renew(self, batch: list[StoredMessage], worker: _Worker, msg: StoredMessage) -> bool:
        """Renew the leases still held once what is left of them is no more
        than one send can take (send_budget) plus a second.

        False if *msg* may not be sent: its lease was lost (taken over by
        another instance after it lapsed, or the row is gone) or the renewal
        failed.
        """
        now = self._clock()
        # The lease must outlast this send: renew when what is left of it is
        # less than one send can take (send_budget) plus a margin.
        left = worker.leased_at + self._claim_ttl - now
        if left > self._send_budget + 1:
            return True
        # Delivered rows too: their confirm (deferred to the end of the run)
        # deletes only rows this owner still holds.
        held = sorted({m.id for m in batch} | set(worker.skipped))
        try:
            renewed = await self._store.extend_claims(
                held, self.owner, int(now) + self._claim_ttl
            )
        except StoreError as exc:
            log.warning("cannot renew delivery claims: %s", exc)
            return False
        worker.leased_at = int(now)  # what the database recorded: int(now) + ttl
        if msg.id not in renewed:
            log.info("claim of message %s lost before delivery; ending this dump", msg.id)
            return False
        return True

    async def _settle(self, delivered: list[int], undelivered: list[int], *,
                      untried: bool = False) -> None:
        """Delete the delivered rows; release the claims of the others (*untried*:
        never sent, or their answer never came, see SiloStore.release_many)."""
        try:
            if delivered:
                await asyncio.shield(self._store.confirm_many(delivered, self.owner))
            if undelivered:
                await asyncio.shield(
                    self._store.release_many(undelivered, self.owner, untried=untried))
        except (StoreError, asyncio.CancelledError) as exc:
            # Delivered rows not deleted may be delivered again (same Call-ID);
            # unreleased claims lapse by themselves after claim_ttl.
            log.warning("delivery bookkeeping not saved: %s", exc)

    async def _retry_if_blocked(self, key: tuple[str, str], worker: _Worker, now: int) -> None:
        """Messages left but none claimable: another instance holds the next one.

        If that instance died, its claim lapses after claim_ttl; try again then,
        so the user gets the rest without having to register again.
        """
        try:
            left = await self._store.count_for(key[0], key[1], now)
        except StoreError:
            return
        # Rows this dump rejected permanently wait for the next REGISTER.
        if left <= len(worker.skipped) or key in self._retries:
            return
        target = worker.target
        loop = asyncio.get_running_loop()

        def again() -> None:
            self._retries.pop(key, None)
            self.kick(key[0], key[1], target)

        self._retries[key] = loop.call_later(self._claim_ttl + 1, again)

    def stop_starting(self) -> None:
        """Shutdown, first step: no new dump starts, running ones end after
        the message in flight (its answer is still awaited and settled)."""
        self._stopping = True
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()

    async def aclose(self, timeout: float = 2.0) -> None:
        """Stop: give in-flight deliveries a moment, then cancel and release."""
        self.stop_starting()
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

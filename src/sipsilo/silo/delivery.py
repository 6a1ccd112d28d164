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
* A row is deleted only after a 2xx. Any other final answer, or a timeout,
  releases the claim, keeps the row and ends this dump: the rest waits for
  the next REGISTER rather than overtaking the message that failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sipsilo.metrics import Counters
from sipsilo.silo.compose import delivery_request
from sipsilo.silo.store import SiloStore, StoredMessage, StoreError
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri
from sipsilo.transport.flow import Target

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


class _Worker:
    __slots__ = ("again", "target", "task")

    def __init__(self, target: DeliveryTarget) -> None:
        self.target = target
        self.again = False
        self.task: asyncio.Task[None] | None = None


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
        user_agent: str | None = None,
    ) -> None:
        self._store = store
        self._send = send
        self.owner = owner
        self._counters = counters
        self._add_date = add_date
        self._claim_ttl = claim_ttl
        self._user_agent = user_agent
        self._workers: dict[tuple[str, str], _Worker] = {}
        self._retries: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def kick(self, username: str, domain: str, target: DeliveryTarget) -> None:
        """Start (or continue) delivering the account's messages to target."""
        key = (username, domain.lower())
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

    async def _run(self, key: tuple[str, str], worker: _Worker) -> None:
        username, domain = key
        try:
            while True:
                now = int(time.time())
                try:
                    batch = await self._store.claim_batch(
                        username, domain, self.owner, now, self._claim_ttl, CLAIM_BATCH
                    )
                except StoreError as exc:
                    log.warning("cannot read messages of %s@%s: %s", username, domain, exc)
                    return
                if not batch:
                    if worker.again:
                        worker.again = False
                        continue
                    await self._retry_if_blocked(key, worker.target, now)
                    return
                if not await self._deliver(batch, worker):
                    return
        finally:
            if self._workers.get(key) is worker:
                del self._workers[key]

    async def _deliver(self, batch: list[StoredMessage], worker: _Worker) -> bool:
        """Send a claimed run one message at a time; False when one failed.

        Rows are deleted after their 2xx, together at the end of the run (one
        transaction instead of one per message): a crash in between may repeat
        those messages, with their Call-ID, never lose them.
        """
        delivered: list[int] = []
        failed_at: int | None = None
        try:
            for i, msg in enumerate(batch):
                target = worker.target
                request = delivery_request(
                    msg, target.request_uri, add_date=self._add_date, user_agent=self._user_agent
                )
                response = await self._send(request, target.target)
                if 200 <= response.status < 300:
                    self._counters.inc("dumped_messages")
                    delivered.append(msg.id)
                    continue
                self._counters.inc("failed_messages")
                log.info(
                    "delivery of message %s to %s failed with %s %s; kept for the next REGISTER",
                    msg.id, target.request_uri, response.status, response.reason,
                )
                failed_at = i
                break
        finally:
            # Also on cancellation (shutdown): settle what was claimed.
            done = set(delivered)
            rest = [m.id for m in batch if m.id not in done]
            await self._settle(delivered, rest)
        return failed_at is None

    async def _settle(self, delivered: list[int], undelivered: list[int]) -> None:
        try:
            if delivered:
                await asyncio.shield(self._store.confirm_many(delivered, self.owner))
            if undelivered:
                await asyncio.shield(self._store.release_many(undelivered, self.owner))
        except (StoreError, asyncio.CancelledError) as exc:
            # Delivered rows not deleted may be delivered again (same Call-ID);
            # unreleased claims lapse by themselves after claim_ttl.
            log.warning("delivery bookkeeping not saved: %s", exc)

    async def _retry_if_blocked(
        self, key: tuple[str, str], target: DeliveryTarget, now: int
    ) -> None:
        """Messages left but none claimable: another instance holds the next one.

        If that instance died, its claim lapses after claim_ttl; try again then,
        so the user gets the rest without having to register again.
        """
        try:
            left = await self._store.count_for(key[0], key[1], now)
        except StoreError:
            return
        if not left or key in self._retries:
            return
        loop = asyncio.get_running_loop()

        def again() -> None:
            self._retries.pop(key, None)
            self.kick(key[0], key[1], target)

        self._retries[key] = loop.call_later(self._claim_ttl + 1, again)

    async def aclose(self, timeout: float = 2.0) -> None:
        """Stop: give in-flight deliveries a moment, then cancel and release."""
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

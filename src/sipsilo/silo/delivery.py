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
from sipsilo.silo.store import SiloStore, StoreError
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri
from sipsilo.transport.flow import Target

log = logging.getLogger(__name__)

Sender = Callable[[Request, Target], Awaitable[Response]]


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
                try:
                    msg = await self._store.claim_next(
                        username, domain, self.owner, int(time.time()), self._claim_ttl
                    )
                except StoreError as exc:
                    log.warning("cannot read messages of %s@%s: %s", username, domain, exc)
                    return
                if msg is None:
                    if worker.again:
                        worker.again = False
                        continue
                    return
                target = worker.target
                request = delivery_request(
                    msg, target.request_uri, add_date=self._add_date, user_agent=self._user_agent
                )
                try:
                    response = await self._send(request, target.target)
                except asyncio.CancelledError:
                    await self._release(msg.id)
                    raise
                if 200 <= response.status < 300:
                    self._counters.inc("dumped_messages")
                    try:
                        await self._store.confirm(msg.id, self.owner)
                    except StoreError as exc:
                        # Delivered but not deleted: it may be delivered again
                        # (same Call-ID), never lost.
                        log.warning("delivered message %s not deleted: %s", msg.id, exc)
                    continue
                self._counters.inc("failed_messages")
                log.info(
                    "delivery of message %s to %s failed with %s %s; kept for the next REGISTER",
                    msg.id, target.request_uri, response.status, response.reason,
                )
                await self._release(msg.id)
                return
        finally:
            if self._workers.get(key) is worker:
                del self._workers[key]

    async def _release(self, msg_id: int) -> None:
        try:
            await asyncio.shield(self._store.release(msg_id, self.owner))
        except (StoreError, asyncio.CancelledError) as exc:
            log.warning("claim on message %s not released (it lapses by itself): %s", msg_id, exc)

    async def aclose(self, timeout: float = 2.0) -> None:
        """Stop: give in-flight deliveries a moment, then cancel and release."""
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

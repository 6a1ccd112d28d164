"""The message-store interface: what the delivery engine and the CLI rely on.

Times are integer unix seconds, as in Kamailio's ``silo`` table.  A message is *expired*
when ``exp_time <= now`` (Kamailio's purge is ``DELETE ... WHERE exp_time <= now``), so
"unexpired" everywhere below means ``exp_time > now``.

Delivery protocol (one message at a time per account, in stored order)::

    msg = await store.claim_next(user, domain, owner, now, claim_ttl)
    ... send it ...
    await store.confirm(msg.id, owner)   # after a 2xx: row deleted
    await store.release(msg.id, owner)   # on failure: claim dropped, row kept

A claim is a lease: if its holder dies, the claim lapses at ``claim_until`` and another
instance takes the row over, so a message can be delivered twice after a crash, never
lost (at-least-once).
"""

from __future__ import annotations

import asyncio
import builtins
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sipsilo.db.errors import StoreConfigError, StoreError

#: Kamailio's ``ctype`` column is VARCHAR(32).
CTYPE_MAX = 32

#: Rows deleted per statement by purge_expired.
PURGE_CHUNK = 5000


def media_type(content_type: str) -> str:
    """``text/plain; charset=utf-8`` -> ``text/plain``, cut to fit Kamailio's ctype column."""
    return content_type.split(";", 1)[0].strip()[:CTYPE_MAX]


@dataclass
class NewMessage:
    """A MESSAGE to store.

    ``ctype`` is the full Content-Type header value, parameters included; the backend keeps
    type/subtype in Kamailio's ``ctype`` column and the full value in ``ctype_full``.
    ``body`` is the exact body bytes.  ``extra_hdrs`` is the header block to re-emit on
    delivery, verbatim, each line ending in CRLF ("" for none).
    """

    src_addr: str
    dst_addr: str
    username: str
    domain: str
    inc_time: int
    exp_time: int
    ctype: str
    body: bytes
    extra_hdrs: str = ""
    callid: str = ""
    # Which request this is (see compose.message_key): a second store() of the
    # same key returns the first row's id instead of inserting again.  None for
    # rows that are not a received MESSAGE (Kamailio's, admin inserts).
    msg_key: str | None = None

    def insert_values(self) -> tuple[Any, ...]:
        """The values of every backend's INSERT, in its column order: src_addr,
        dst_addr, username, domain, inc_time, exp_time, ctype, ctype_full,
        body, extra_hdrs, callid, msg_key."""
        return (
            self.src_addr,
            self.dst_addr,
            self.username,
            self.domain,
            int(self.inc_time),
            int(self.exp_time),
            media_type(self.ctype),
            self.ctype,
            bytes(self.body),
            self.extra_hdrs,
            self.callid,
            self.msg_key,
        )


class RowId(int):
    """The id store() returns; ``duplicate`` when the message was stored before
    (same ``msg_key``) and nothing was inserted."""

    duplicate: bool

    def __new__(cls, value: int, duplicate: bool = False) -> RowId:
        self = super().__new__(cls, value)
        self.duplicate = duplicate
        return self


@dataclass(kw_only=True)
class StoredMessage(NewMessage):
    """A row of the table.  ``ctype`` is the full Content-Type if we stored it, else (a row
    inserted by Kamailio) the bare type/subtype of Kamailio's column."""

    id: int
    snd_time: int = 0
    status: int = 0
    attempts: int = 0
    claim_owner: str | None = None
    claim_until: int = 0


@dataclass
class StoreStats:
    """Counters for metrics: how well group commit is batching."""

    transactions: int = 0  # committed write transactions
    operations: int = 0  # operations carried by them
    stores: int = 0  # messages stored
    duplicates: int = 0  # stores answered with an existing row (same msg_key)
    max_batch: int = 0
    errors: int = 0


class SiloStore(ABC):
    """Async message store.  All methods may raise :class:`StoreError`."""

    stats: StoreStats

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema if needed."""

    @abstractmethod
    async def close(self) -> None:
        """Finish queued operations and disconnect.  Idempotent."""

    async def __aenter__(self) -> SiloStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def store(self, msg: NewMessage) -> RowId:
        """Insert *msg* and return its id once the row is committed (durable on return).

        Idempotent: if a row with the same ``msg_key`` exists (a retransmission, a
        re-send after our 202 was lost, after a restart too), nothing is inserted
        and that row's id is returned (``duplicate`` set).  The database's unique key on ``msg_key``
        makes this hold between instances as well.
        """

    @abstractmethod
    async def stored_id(self, msg_key: str) -> int | None:
        """The id of the row stored under *msg_key*, None if there is none."""

    @abstractmethod
    async def count_for(self, username: str, domain: str, now: int) -> int:
        """Unexpired deliverable messages (``snd_time = 0``) of the account."""

    async def pending_elsewhere(self, username: str, domain: str, owner: str, now: int
                                ) -> bool:
        """Is one of the account's stored messages on its way through another
        process (another instance): claimed by an owner not *owner*, or stored
        and not tried yet? Only a database shared by instances can say; this
        store's answer: no."""
        return False

    @abstractmethod
    async def count_from(self, src_addr: str) -> int:
        """Rows stored from one sender (``src_addr``), expired or not: an index-only
        count, for the per-sender cap (expired rows go at the next purge)."""

    @abstractmethod
    async def claim_next(
        self, username: str, domain: str, owner: str, now: int, claim_ttl: int
    ) -> StoredMessage | None:
        """Atomically claim the account's next message for delivery by *owner*.

        Candidate: the lowest-id unexpired ``snd_time = 0`` row that is not claimed
        (no owner, or ``claim_until < now``).  None is returned instead if a lower-id
        unexpired row is held by a *different* owner: per account, messages go out one
        at a time in stored order across all instances.  Rows held by *owner* itself do
        not block, the engine serialises its own deliveries.  On success the row gets
        ``claim_owner = owner``, ``claim_until = now + claim_ttl``, ``attempts + 1``.
        Expired rows are never returned; reminders (``snd_time > 0``) are never touched.
        """

    @abstractmethod
    async def confirm(self, id: int, owner: str | None = None) -> bool:
        """Delivered (2xx): delete the row.  With *owner*, only if that owner holds the
        claim, which protects against deleting a different row that reused the id
        (SQLite reuses the highest id after it is deleted).  True if a row was deleted."""

    @abstractmethod
    async def release(self, id: int, owner: str | None = None) -> bool:
        """Delivery failed: drop the claim, keep the row.  With *owner*, only if held by it."""

    @abstractmethod
    async def claim_batch(
        self, username: str, domain: str, owner: str, now: int, claim_ttl: int, limit: int
    ) -> builtins.list[StoredMessage]:
        """Claim up to *limit* of the account's next messages, in order, for *owner*.

        The same rule as claim_next, applied row after row: a dump claims a run
        of messages in one database round trip instead of one per message.
        """

    @abstractmethod
    async def confirm_many(self, ids: builtins.list[int], owner: str | None = None) -> int:
        """confirm() for several rows at once (deletes batched after their 2xx)."""

    @abstractmethod
    async def release_many(self, ids: builtins.list[int], owner: str | None = None, *,
                           untried: bool = False) -> int:
        """release() for several rows at once. *untried*: their delivery never
        concluded (a shutdown ended the dump before it sent them, or before
        their answer): the claim's attempt is taken back too, so they count as
        waiting, as before the claim (``pending_elsewhere``)."""

    @abstractmethod
    async def extend_claims(
        self, ids: builtins.list[int], owner: str, until: int
    ) -> builtins.list[int]:
        """Renew *owner*'s lease on the given rows to *until*; return the ids renewed.

        Only rows *owner* still holds are touched: a row whose lease already lapsed
        and was taken by another instance, or that was deleted (expired, purged),
        is not in the result, and its holder must not send it any more.
        """

    @abstractmethod
    async def claimed_for(self, owner: str) -> builtins.list[tuple[str, str]]:
        """The accounts (username, domain) with messages *owner* holds claims on:
        whose dumps a process that died left half done."""

    @abstractmethod
    async def release_owner(self, owner: str) -> int:
        """Drop every claim held by *owner*: a restarted instance reclaims nothing
        it held before, so its users' messages are not blocked until the lease
        lapses. Untried, as release_many's: the process that held them died
        before their delivery concluded."""

    @abstractmethod
    async def purge_expired(self, now: int) -> int:
        """Delete every row with ``exp_time <= now``; return how many.

        Backends delete in chunks (:data:`PURGE_CHUNK` rows per statement), each
        its own short transaction, so a large purge never holds the write lock
        (or the SQLite writer thread) against stores for long.

        Claimed rows are deleted too, as Kamailio does: the message is expired, so whatever
        the in-flight delivery's outcome, the row must go, and its later confirm/release
        simply finds nothing.  Delivery never starts on an expired row (claim_next checks).
        """

    @abstractmethod
    async def list_messages(
        self,
        username: str | None = None,
        domain: str | None = None,
        limit: int = 1000,
        after_id: int = 0,
    ) -> builtins.list[StoredMessage]:
        """Rows in id order, optionally of one account (or one domain), ids > after_id."""

    @abstractmethod
    async def get(self, id: int) -> StoredMessage | None: ...

    @abstractmethod
    async def delete(self, id: int) -> bool: ...

    @abstractmethod
    async def purge_account(self, username: str, domain: str) -> int:
        """Delete every row of the account (expired or not, reminders too)."""

    @abstractmethod
    async def count(self) -> int:
        """All rows."""


__all__ = [
    "CTYPE_MAX",
    "PURGE_CHUNK",
    "NewMessage",
    "RowId",
    "SiloStore",
    "StoreConfigError",
    "StoreError",
    "StoreStats",
    "StoredMessage",
    "media_type",
]


async def purge_in_chunks(chunk: Callable[[], Awaitable[int]]) -> int:
    """Run *chunk* (one DELETE of at most PURGE_CHUNK rows) until a short one;
    the rows deleted in all. Other work gets the loop between chunks."""
    total = 0
    while True:
        n = await chunk()
        total += n
        if n < PURGE_CHUNK:
            return total
        await asyncio.sleep(0)

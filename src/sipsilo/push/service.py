"""When to push: one push per user per ``[push] min_interval``, never on the 202's path.

A stored message for a user with a push target wakes the phone at once, unless a push
went to that user less than ``min_interval`` ago: then one push is scheduled for the
end of the interval and carries every message stored meanwhile (the count read from
the store when it goes, and the newest sender). A REGISTER or unREGISTER of the user
starts the interval afresh and drops a scheduled push: a phone that registered gets its
messages from the dump, and one that unregisters may be woken again at once.

Pushes run as background tasks, at most ``max_concurrent`` at a time, each bounded by
``timeout``. Outcomes are counted (``push_sent``, ``push_failed``, ``push_removed``) and
logged; a provider that calls the token dead gets the target removed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipsilo.config_push import PushConfig
from sipsilo.push.store import PushStore, PushTarget

if TYPE_CHECKING:
    from sipsilo.push.pushers import Pushers

log = logging.getLogger(__name__)
# httpx logs every request at INFO and httpcore every step at DEBUG; our own line per
# push says what matters (and never carries a token).
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.INFO)

#: user, domain -> messages waiting (the store's count_for)
CountWaiting = Callable[[str, str], Awaitable[int]]


class PushService:
    def __init__(self, cfg: PushConfig, targets: PushStore, count_waiting: CountWaiting,
                 counters: Any, data_dir: Path) -> None:
        self.cfg = cfg
        self.targets = targets
        self.count_waiting = count_waiting
        self.counters = counters
        # The providers' HTTP/2 client and crypto (tens of MB per process) are
        # loaded only by a server with [push] configured.
        from sipsilo.push.pushers import Pushers

        self.pushers: Pushers = Pushers(cfg, data_dir)
        self._sem = asyncio.Semaphore(cfg.max_concurrent)
        self._last: dict[str, float] = {}           # aor -> monotonic time of its last push
        self._newest: dict[str, str] = {}           # aor -> newest sender since then
        self._scheduled: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # aor -> (target, when) this process last saved, to skip rewriting it
        self._saved: dict[str, tuple[tuple[str, str, str, str], int]] = {}

    async def open(self) -> None:
        """Start the purge of old targets (the store is opened and closed by its owner)."""
        self._spawn(self._purge_loop())

    async def _purge_loop(self) -> None:
        """Forget targets not refreshed for keep_days (hourly)."""
        while True:
            try:
                gone = await self.targets.purge(time.time())
                if gone:
                    log.info("forgot %d push targets not refreshed for %d days",
                             gone, self.cfg.keep_days)
            except Exception as exc:
                log.warning("push target purge failed: %s", exc)
            await asyncio.sleep(3600)

    async def aclose(self) -> None:
        for task in [*self._tasks, *self._scheduled.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._scheduled.values(), return_exceptions=True)
        await self.pushers.aclose()

    # ------------------------------------------------------------ events
    async def registered(self, aor: str, target: PushTarget | None) -> None:
        """A REGISTER (or unREGISTER) for *aor*: the interval starts afresh; a
        REGISTER carrying ``pn-*`` refreshes the AoR's push target."""
        self.reset(aor)
        if target is None:
            return
        # A phone re-registers every few minutes with the same token: write only a
        # new target, or refresh an old one's age once an hour (keep_days is in days).
        key = (target.provider, target.prid, target.param, target.purr)
        saved = self._saved.get(aor)
        if saved is not None and saved[0] == key and target.updated_at - saved[1] < 3600:
            return
        await self.targets.save(target)
        if len(self._saved) > 100000:
            self._saved.clear()
        self._saved[aor] = (key, target.updated_at)

    def reset(self, aor: str) -> None:
        self._last.pop(aor, None)
        self._newest.pop(aor, None)
        task = self._scheduled.pop(aor, None)
        if task is not None:
            task.cancel()

    def stored(self, aor: str, user: str, domain: str, sender: str) -> None:
        """A message was stored for *aor*: push now, or once at the end of the interval."""
        self._newest[aor] = "" if self.cfg.privacy else sender
        if aor in self._scheduled:
            return  # that push will count this message too
        now = time.monotonic()
        last = self._last.get(aor)
        delay = 0.0 if last is None else last + self.cfg.min_interval - now
        if delay <= 0:
            self._last[aor] = now
            self._spawn(self._push(aor, user, domain))
        else:
            self._scheduled[aor] = asyncio.create_task(self._later(aor, user, domain, delay))
        if len(self._last) > 10000:
            self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        for aor, at in list(self._last.items()):
            if at + self.cfg.min_interval < now and aor not in self._scheduled:
                del self._last[aor]
                self._newest.pop(aor, None)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, aor: str, user: str, domain: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self._scheduled.pop(aor, None)
        self._last[aor] = time.monotonic()
        self._spawn(self._push(aor, user, domain))

    # -------------------------------------------------------------- push
    async def _push(self, aor: str, user: str, domain: str) -> None:
        async with self._sem:
            try:
                await asyncio.wait_for(self._push_once(aor, user, domain), self.cfg.timeout)
            except TimeoutError:
                self.counters.inc("push_failed")
                log.warning("push to %s failed: no answer within %s s", aor, self.cfg.timeout)
            except Exception as exc:  # a push must never take the server down
                self.counters.inc("push_failed")
                log.warning("push to %s failed: %s", aor, exc)

    async def _push_once(self, aor: str, user: str, domain: str) -> None:
        target = await self.targets.get(aor, time.time())
        if target is None:
            log.debug("no push target for %s", aor)
            return
        pusher = self.pushers.for_provider(target.provider)
        if pusher is None:
            log.info("push to %s not sent: no pusher for provider %s", aor, target.provider)
            return
        waiting = await self.count_waiting(user, domain)
        if waiting <= 0:
            return  # delivered meanwhile
        from sipsilo.push.pushers import Notice  # loaded with Pushers already

        notice = Notice(target, waiting, self._newest.get(aor, ""))
        outcome, reason = await pusher.push(notice)
        if outcome == "sent":
            self.counters.inc("push_sent")
            log.info("push to %s via %s sent (%d waiting)", aor, target.provider, waiting)
        elif outcome == "dead":
            await self.targets.remove(aor, target.prid)
            self._saved.pop(aor, None)
            self.counters.inc("push_failed")
            self.counters.inc("push_removed")
            log.info("push target of %s removed: %s says the token is dead (%s)",
                     aor, target.provider, reason)
        else:
            self.counters.inc("push_failed")
            log.warning("push to %s via %s failed: %s", aor, target.provider, reason)

"""``[auth] enabled = "auto"`` on a running server: authentication turns on by itself.

At start-up an empty subscriber table leaves authentication off (the seed's open
behaviour). ``sipsilo user add`` on a running server must not need a restart to take
effect, or the new user's account stays open to anyone until somebody remembers one.
So while it is off, the decision that would challenge a request asks the table again,
at most once per :data:`RECHECK_INTERVAL`: one cheap query a second per process, and
only for requests that would be challenged (REGISTERs and requests from our domains),
never per request.

The switch is one way: once on, removing every user does not turn authentication off
again (that would silently open every account); a restart with an empty table does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from sipsilo.auth.policy import Authenticator

__all__ = ["RECHECK_INTERVAL", "AutoSwitch"]

log = logging.getLogger("sipsilo.auth")

#: Seconds between two looks at an empty subscriber table.
RECHECK_INTERVAL = 1.0


class AutoSwitch:
    """Off until the subscriber table has a user; then the authenticator, for good."""

    def __init__(self, make: Callable[[], Authenticator], count: Callable[[], Awaitable[int]],
                 interval: float = RECHECK_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._make = make
        self._count = count
        self.interval = interval
        self._clock = clock
        self._next = clock() + interval  # the table was read at start-up
        self._failing = False
        self.auth: Authenticator | None = None

    async def poll(self) -> Authenticator | None:
        """The authenticator once the table has users, else None (off for now)."""
        if self.auth is not None:
            return self.auth
        now = self._clock()
        if now < self._next:
            return None
        self._next = now + self.interval  # before the await: one query at a time
        try:
            users = await self._count()
        except Exception as exc:  # a database outage: stay as we are
            if not self._failing:
                log.warning("auth = \"auto\": cannot read the subscriber table (%s); "
                            "authentication stays off until it can", exc)
            self._failing = True
            return None
        self._failing = False
        if users > 0 and self.auth is None:
            self.auth = self._make()
            log.warning("authentication turned on: the subscriber table has users (%d)",
                        users)
        return self.auth

"""Counters the server keeps and shows through `sipsilo stats`.

msilo's own statistics keep Kamailio's names (`stored_messages`,
`dumped_messages`, `failed_messages`, `expired_messages`), counted the way
their names say: Kamailio 5.6 books every delivered message under
`dumped_reminders` instead.
"""

from __future__ import annotations

from collections import Counter

MSILO_COUNTERS = ("stored_messages", "dumped_messages", "failed_messages", "expired_messages",
                  # ours: MESSAGEs refused by a storage limit (silo.limits), and
                  # MESSAGEs stored already (re-sent) answered 202 without a new row
                  "refused_messages", "duplicate_messages")


class Counters:
    def __init__(self) -> None:
        self._values: Counter[str] = Counter({name: 0 for name in MSILO_COUNTERS})

    def inc(self, name: str, by: int = 1) -> None:
        self._values[name] += by

    def get(self, name: str) -> int:
        return self._values[name]

    def snapshot(self) -> dict[str, int]:
        return dict(self._values)

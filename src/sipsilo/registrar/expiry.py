"""Housekeeping for the app's timer.

Correctness never depends on it: ``LocationService.lookup`` already hides
expired bindings. The sweep only frees their memory/rows and reports them
(for logs and metrics).
"""

from __future__ import annotations

from sipsilo.registrar.binding import Binding
from sipsilo.registrar.location import LocationService


async def sweep(location: LocationService, now: float) -> list[Binding]:
    """Drop every binding expired at ``now``; returns what was dropped."""
    return await location.expire(now)

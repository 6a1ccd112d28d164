"""Date formatting helpers (RFC 1123 for the Date header, C ctime for msilo)."""

from __future__ import annotations

import calendar
import time

from sipsilo.sip.errors import ParseError

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_rfc1123(ts: float) -> str:
    """``Thu, 26 Nov 2026 12:38:33 GMT`` (RFC 3261 §20.17, always GMT).

    Built by hand rather than with strftime so the output never depends on
    the process locale.
    """
    t = time.gmtime(ts)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def ctime_prefix(ts: float) -> str:
    """The 24-character C ``ctime()`` string in UTC: ``Thu Nov 26 12:38:33 2026``.

    msilo prefixes stored messages with this exact format, so the day of the
    month is space-padded as C does (``Nov  6``).
    """
    t = time.gmtime(ts)
    return (
        f"{_DAYS[t.tm_wday]} {_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {t.tm_year:04d}"
    )


def parse_rfc1123(text: str) -> float:
    """Parse an RFC 1123 date as used in the SIP Date header, returning a POSIX time."""
    parts = text.strip().split()
    if len(parts) != 6 or parts[5].upper() != "GMT" or not parts[0].endswith(","):
        raise ParseError(400, "Bad Date header")
    if parts[0][:-1] not in _DAYS or parts[2] not in _MONTHS:
        raise ParseError(400, "Bad Date header")
    try:
        day = int(parts[1])
        year = int(parts[3])
        hh, mm, ss = (int(x) for x in parts[4].split(":"))
    except ValueError:
        raise ParseError(400, "Bad Date header") from None
    month = _MONTHS.index(parts[2]) + 1
    if not (1 <= day <= 31 and 0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss <= 60):
        raise ParseError(400, "Bad Date header")
    if not 1 <= year <= 9999:  # beyond what the calendar functions accept
        raise ParseError(400, "Bad Date header")
    return float(calendar.timegm((year, month, day, hh, mm, ss, 0, 0, 0)))

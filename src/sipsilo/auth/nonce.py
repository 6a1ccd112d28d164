"""Server nonces: stateless to verify, bounded state to refuse replays.

A nonce is ``base64url(issued_at(8) || random(8) || HMAC-SHA256(secret, issued_at ||
random || realm)[:16])``. Any instance holding the same secret can check that it issued
the nonce and when, without shared state, so a client may be challenged by one instance
and answer another after a restart.

Replay protection needs state: for each nonce seen, the highest nonce-count accepted
(RFC 7616 §3.4: nc must increase). The table is bounded. When an entry has to be evicted
its issue time becomes a low-water mark: a nonce issued at or before the mark that is no
longer in the table is answered as stale instead of trusted again, so eviction never
re-opens a replay window. A stale answer costs a legitimate client one silent retry.

Each entry also names the account (:attr:`~sipsilo.auth.identity.Identity.key`) that
used the nonce first: a nonce answered for bob is not then good for another account.

The table is per process: a request replayed to *another* worker or instance sharing the
secret is not caught there (as with Kamailio's per-instance nonce-count arrays). Deploy
one instance per secret, or keep ``nonce_expires`` short, where that matters. The state is
keyed by the nonce text itself (unique: random and MACed), with plain values (issue time,
highest nc, account key), so that a shared store can later replace the dict as is.
"""

from __future__ import annotations

import base64
import heapq
import hmac
import os
import secrets
import struct
import time
from enum import Enum
from hashlib import sha256
from pathlib import Path

SECRET_FILE = "auth.secret"
_MAC_LEN = 16
_RAW_LEN = 8 + 8 + _MAC_LEN
# Nonces from a clock slightly ahead (another instance) are still accepted.
_MAX_SKEW = 30

#: nc recorded for a nonce used without qop (no nc at all): never usable again.
_USED_NO_QOP = 1 << 40


class NonceState(Enum):
    VALID = "valid"
    STALE = "stale"        # ours but expired (or forgotten): re-challenge with stale=true
    INVALID = "invalid"    # not ours: forged, truncated, another realm


class NonceManager:
    def __init__(self, secret: bytes, realm: str, expires: int = 300,
                 max_tracked: int = 100_000) -> None:
        if len(secret) < 16:
            raise ValueError("nonce secret must be at least 16 bytes")
        self._secret = secret
        self._realm = realm.encode("utf-8")
        self.expires = expires
        self.max_tracked = max_tracked
        self._seen: dict[str, tuple[int, int, str]] = {}  # nonce -> (ts, max nc, account)
        # (issue time, nonce) of every entry of _seen, oldest issued first: both
        # expiry and eviction take from the front, never scanning the table.
        self._by_age: list[tuple[int, str]] = []
        self._low_water = -1

    def _mac(self, head: bytes) -> bytes:
        return hmac.new(self._secret, head + self._realm, sha256).digest()[:_MAC_LEN]

    def issue(self, now: float) -> str:
        head = struct.pack(">Q", int(now)) + secrets.token_bytes(8)
        return base64.urlsafe_b64encode(head + self._mac(head)).decode("ascii")

    def issued_at(self, nonce: str) -> int | None:
        """The issue time of a nonce this server made, None if it is not one."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return None
        if len(raw) != _RAW_LEN:
            return None
        head, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        return int(struct.unpack(">Q", head[:8])[0])

    def check(self, nonce: str, now: float) -> NonceState:
        ts = self.issued_at(nonce)
        if ts is None or ts > now + _MAX_SKEW:
            return NonceState.INVALID
        if now - ts > self.expires:
            return NonceState.STALE
        if ts <= self._low_water and nonce not in self._seen:
            return NonceState.STALE
        return NonceState.VALID

    def use(self, nonce: str, nc: int | None, account: str = "") -> bool:
        """Record one use of a VALID nonce by *account*; False if it is a replay.

        *nc* is the request's nonce-count, None when the client sent no qop: such a
        nonce is single-use, since without nc nothing else tells a replay apart.
        A nonce first used by another account counts as a replay too.
        Call only after the digest itself checked out, so forged requests cannot
        fill the table or burn a victim's nonce.
        """
        ts = self.issued_at(nonce)
        if ts is None:
            return False
        prev = self._seen.get(nonce)
        if prev is not None:
            if nc is None or nc <= prev[1] or account != prev[2]:
                return False
            self._seen[nonce] = (ts, nc, account)
            return True
        if ts <= self._low_water:
            return False
        self._seen[nonce] = (ts, _USED_NO_QOP if nc is None else nc, account)
        heapq.heappush(self._by_age, (ts, nonce))
        while len(self._seen) > self.max_tracked:
            # the oldest issued goes first: it is the nearest to expiry anyway
            old_ts, old = heapq.heappop(self._by_age)
            del self._seen[old]
            self._low_water = max(self._low_water, old_ts)
        return True

    def forget_expired(self, now: float) -> int:
        """Drop entries whose nonce is past expiry anyway (the clock check refuses them).

        Takes from the front of the age order only: O(expired · log n), not a scan.
        """
        dead = 0
        heap = self._by_age
        while heap and now - heap[0][0] > self.expires:
            _, nonce = heapq.heappop(heap)
            del self._seen[nonce]
            dead += 1
        return dead

    @property
    def tracked(self) -> int:
        return len(self._seen)


def load_secret(data_dir: Path) -> bytes:
    """The server secret from ``<data_dir>/auth.secret``, created (0600) on first use.

    Created with O_EXCL so that two instances starting together agree on one secret:
    the loser of the race reads the winner's file.
    """
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    text = ""
    for _ in range(50):
        text = path.read_text().strip()
        if text:  # a racing creator may not have written yet
            break
        time.sleep(0.02)
    if len(text) < 32:
        raise ValueError(f"{path}: secret too short or empty; delete it to make a new one")
    return text.encode("ascii")

"""Timer values (RFC 3261 §17 and table 4) plus Kamailio's tm knobs.

Choices, where the contract left room:

* E (non-INVITE client), G (INVITE server): start at T1, double up to T2.
  A (INVITE client): starts at T1 and doubles with no cap, as §17.1.1.2 says.
* F (non-INVITE client) and B (INVITE client, Calling): ``fr_timer``.
* C (INVITE client, Proceeding): ``fr_inv_timer``, re-armed on every provisional
  like the proxy's timer C of §16.8. On expiry the TU sees Timeout and is
  expected to CANCEL; the transaction stays to ACK the final that provokes and
  gives up for good ``fr_timer`` later (timer B re-armed as the guard).
* K (non-INVITE client, Completed, unreliable): ``wt_timer``; its default is
  T4, the RFC value, and K exists exactly to absorb late retransmissions.
* J (non-INVITE server): 64*T1, NOT capped by ``wt_timer``. J must outlive the
  client's timer F, or a late retransmission of a MESSAGE would open a new
  server transaction and be stored twice.
* D (INVITE client): 64*T1 (32 s by default, the RFC's "at least 32 s"); not
  capped either, so retransmitted 3xx-6xx keep being ACKed for as long as the
  server's timer H can retransmit them.
* H, L, M: 64*T1.  I: T4.
* On reliable transports E, G, A are never armed, and D, I, J, K are zero: the
  transaction terminates at once instead of arming a zero-delay timer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    fr_timer: float = 32.0  # timer F (non-INVITE) and B (INVITE)
    fr_inv_timer: float = 180.0  # INVITE client: wait for a final after a provisional
    wt_timer: float = 5.0  # timer K on unreliable transports

    @property
    def t1x64(self) -> float:
        """64*T1: the lifetime of timers H, J, D, L and M."""
        return 64 * self.t1

    def backoff(self, interval: float) -> float:
        """Next retransmission interval for E and G: double, capped at T2."""
        return min(2 * interval, self.t2)


DEFAULT_TIMERS = TimerConfig()

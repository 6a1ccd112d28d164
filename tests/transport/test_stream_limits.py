"""The connection limits as plain functions: which connection goes, which is refused."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

import pytest

from sipsilo.transport.stream import (
    MemoryReturn,
    RefusalLog,
    StreamLimits,
    _malloc_trim,
    admission,
    hop_limits,
    overdue,
    peer_key,
    unpinned,
)

LIMITS = StreamLimits(max_connections=10, max_connections_per_ip=2, idle_timeout=100,
                      message_timeout=5)


@dataclass
class Conn:
    remote: tuple[str, int] = ("192.0.2.1", 5060)
    inbound: bool = True
    hop: bool = False
    proof_due: float | None = None
    last_active: float = 0.0
    pinned_until: float = 0.0
    spoke: bool = False
    partial_since: float | None = 0.0


def test_trickling_bytes_do_not_extend_the_message_deadline() -> None:
    slow = Conn(last_active=4.9)  # a byte a second since the accept at 0
    assert overdue(slow, LIMITS, 4.9) is None
    slow.last_active = 5.0
    assert overdue(slow, LIMITS, 5.0) == "no complete message within 5 s"
    # After one message, the next one gets the same deadline from its first byte.
    talker = Conn(spoke=True, partial_since=50.0, last_active=54.0)
    assert overdue(talker, LIMITS, 54.0) is None
    assert overdue(talker, LIMITS, 55.0) is not None


def test_silence_closes_after_the_idle_timeout_and_registered_flows_are_spared() -> None:
    quiet = Conn(spoke=True, partial_since=None, last_active=0.0)
    assert overdue(quiet, LIMITS, 99.0) is None
    assert overdue(quiet, LIMITS, 100.0) == "idle for 100 s"
    quiet.pinned_until = 500.0
    assert overdue(quiet, LIMITS, 499.0) is None
    assert overdue(Conn(pinned_until=500.0), LIMITS, 499.0) is None
    forever = StreamLimits(idle_timeout=0, message_timeout=5)
    assert overdue(quiet, forever, 10_000.0) is None
    # One we opened and the peer never answered on: gone once the answer to
    # our request is overdue, not at the deadline of a peer's first message.
    opened = Conn(inbound=False, partial_since=None)
    assert overdue(opened, LIMITS, 31.9) is None
    assert overdue(opened, LIMITS, 32.0) == "idle for 32 s"


def test_a_hand_over_we_opened_waits_for_a_slow_phone_beyond_the_hop_deadline() -> None:
    """The hop's 3 s are what a connection to our hop listener has to prove
    itself; the connection we open to another worker's hop carries a request
    whose phone may take ten seconds to answer. Closing it at 3 s failed the
    request here (stored, 202) while the phone still got it: twice."""
    hop = hop_limits(dataclasses.replace(LIMITS, answer_timeout=11.0), workers=2)
    assert hop.message_timeout == 3.0
    ours = Conn(inbound=False, hop=True, partial_since=None, last_active=0.0)
    assert overdue(ours, hop, 10.9) is None
    assert overdue(ours, hop, 11.0) == "idle for 11 s"
    theirs = Conn(inbound=True, hop=True, partial_since=None, last_active=0.0)
    assert overdue(theirs, hop, 3.0) == "idle for 3 s"


def test_caps_count_unregistered_connections_and_the_source_only_for_accepted_ones() -> None:
    conns = [Conn(), Conn(pinned_until=100.0)]
    assert unpinned(conns, 10.0) == 1 and unpinned(conns, 100.0) == 2
    assert admission(Conn(), LIMITS, 9, lambda: 1) is None
    assert admission(Conn(), LIMITS, 10, lambda: 0) == "10 connections open"
    assert admission(Conn(), LIMITS, 3, lambda: 2) == "2 connections open from that address"
    assert admission(Conn(inbound=False), LIMITS, 3, lambda: 2) is None
    no_cap = StreamLimits(max_connections_per_ip=0)
    assert admission(Conn(), no_cap, 3, lambda: 1000) is None


@pytest.mark.parametrize(("host", "key"), [
    ("192.0.2.1", "192.0.2.1"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("fe80::1%eth0", "fe80::/64"),
])
def test_the_per_ip_cap_counts_an_ipv6_64_as_one_source(host: str, key: str) -> None:
    assert peer_key(host) == key


def test_refusals_are_all_counted_but_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = RefusalLog("tcp", interval=10.0)
    with caplog.at_level(logging.WARNING, "sipsilo.transport.stream"):
        for i in range(1000):
            refusals.refused("192.0.2.1", "2 connections open from that address", i / 1000)
        refusals.flush(5.0)  # a sweep before the interval: nothing yet
        refusals.refused("192.0.2.2", "10 connections open", 6.0)
        refusals.flush(10.0)
        refusals.flush(30.0)  # nothing new: no line
    lines = [r.getMessage() for r in caplog.records]
    assert refusals.total == 1001
    assert lines == [
        "refused 1 tcp connection (1 with 2 connections open from that address),"
        " 1 of them from 192.0.2.1",
        "refused 1000 tcp connections (999 with 2 connections open from that address;"
        " 1 with 10 connections open), 999 of them from 192.0.2.1",
    ]


def test_memory_is_handed_back_once_enough_buffers_were_freed() -> None:
    async def main() -> int:
        memory = MemoryReturn(threshold=1000, delay=0.01)
        memory.released(999)
        await asyncio.sleep(0.05)
        assert memory.trims == 0
        memory.released(1)
        memory.released(5000)  # one trim for the lot
        await asyncio.sleep(0.05)
        return memory.trims

    assert asyncio.run(main()) == (1 if _malloc_trim() is not None else 0)


def test_the_hop_budget_is_sized_for_the_peers_and_bounded_per_source_and_in_all() -> None:
    """Each peer worker holds one connection to us: twice the workers per
    source (a reopened connection overlapping the old one), at least 8; in
    all at least 256; the first message due within 3 s at most."""
    assert hop_limits(LIMITS, 1) == StreamLimits(
        max_connections=256, max_connections_per_ip=8, idle_timeout=100,
        message_timeout=3.0, max_header_size=LIMITS.max_header_size)
    big = hop_limits(StreamLimits(message_timeout=1.0), 100)
    assert (big.max_connections, big.max_connections_per_ip, big.message_timeout) == \
        (800, 200, 1.0)
    hop = hop_limits(LIMITS, 2)
    # the hop's own counts: a stranger from 127.0.0.1 gets its per-source share only
    loop = Conn(remote=("127.0.0.1", 40000), hop=True)
    assert admission(loop, hop, 7, lambda: 7) is None
    assert admission(loop, hop, 8, lambda: 8) == "8 connections open from that address"
    assert admission(Conn(hop=True), hop, 256, lambda: 0) == "256 connections open"


def test_an_unproven_hop_connection_goes_at_its_deadline_however_busy_it_keeps() -> None:
    """A stranger on the hop listener that talks (responses, ACKs, pings) but
    never sends a signed hand-over is closed when its proof is due; once a
    signed one came (proof_due None) the ordinary rules apply."""
    busy = Conn(hop=True, proof_due=3.0, spoke=True, partial_since=None, last_active=2.9)
    assert overdue(busy, LIMITS, 2.9) is None
    assert overdue(busy, LIMITS, 3.0) == "no signed hand-over"
    busy.proof_due = None
    assert overdue(busy, LIMITS, 50.0) is None
    assert overdue(busy, LIMITS, 102.9) == "idle for 100 s"

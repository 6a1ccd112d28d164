"""The table of completed transactions that only absorb retransmissions."""

from __future__ import annotations

from tests.clock import Clock

from sipsilo.flow import Flow
from sipsilo.stack.completed import CompletedTransactions


def test_entries_answer_until_their_linger_time_then_expire_in_order() -> None:
    clock = Clock(100.0)
    table = CompletedTransactions(clock)
    flow = Flow("udp", ("127.0.0.1", 5060), ("127.0.0.1", 5070))
    table.add(("a",), b"SIP/2.0 202 Accepted\r\n\r\n", flow, linger=0.05)
    table.add(("b",), None, None, linger=10.0)
    assert table.get(("a",)) == (b"SIP/2.0 202 Accepted\r\n\r\n", flow)
    assert ("b",) in table and len(table) == 2
    clock.now += 0.049
    assert table.expire() == 0
    clock.now += 0.011
    assert table.expire() == 1
    assert table.get(("a",)) is None
    assert ("b",) in table


def test_a_short_linger_expires_on_time_behind_a_long_one() -> None:
    # Timer K (short) entries added after a timer J (long) entry must not wait
    # for the J entry to expire first.
    clock = Clock(100.0)
    table = CompletedTransactions(clock)
    table.add(("j",), b"SIP/2.0 200 OK\r\n\r\n", None, linger=10.0)
    table.add(("k",), None, None, linger=0.05)
    clock.now += 0.05
    assert table.expire() == 1
    assert ("k",) not in table
    assert ("j",) in table


def test_entries_give_the_cyclic_gc_nothing_to_walk() -> None:
    # At thousands of transactions a second every tracked object per entry
    # would lengthen the young-generation collections that pause the server.
    import gc

    table = CompletedTransactions()
    flow = Flow("udp", ("127.0.0.1", 5060), ("127.0.0.1", 5070))
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        key = ("3261", f"z9hG4bK{i}", "127.0.0.1", "5070", "MESSAGE")
        table.add(key, b"SIP/2.0 202 Accepted\r\n\r\n", flow, linger=32.0)
        table.add((f"z9hG4bKc{i}", "MESSAGE"), None, None, linger=5.0)
    del key
    assert len(gc.get_objects()) - before < 50
    hit = table.get(("3261", "z9hG4bK9999", "127.0.0.1", "5070", "MESSAGE"))
    assert hit == (b"SIP/2.0 202 Accepted\r\n\r\n", flow)

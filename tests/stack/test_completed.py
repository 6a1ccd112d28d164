"""The table of completed transactions that only absorb retransmissions."""

from __future__ import annotations

import time

from sipsilo.stack.completed import CompletedTransactions
from sipsilo.transport.flow import Flow


def test_entries_answer_until_their_linger_time_then_expire_in_order() -> None:
    table = CompletedTransactions()
    flow = Flow("udp", ("127.0.0.1", 5060), ("127.0.0.1", 5070))
    table.add(("a",), b"SIP/2.0 202 Accepted\r\n\r\n", flow, linger=0.05)
    table.add(("b",), None, None, linger=10.0)
    assert table.get(("a",)) == (b"SIP/2.0 202 Accepted\r\n\r\n", flow)
    assert ("b",) in table and len(table) == 2
    assert table.expire() == 0
    time.sleep(0.06)
    assert table.expire() == 1
    assert table.get(("a",)) is None
    assert ("b",) in table


def test_a_short_linger_expires_on_time_behind_a_long_one() -> None:
    # Timer K (short) entries added after a timer J (long) entry must not wait
    # for the J entry to expire first.
    table = CompletedTransactions()
    table.add(("j",), b"SIP/2.0 200 OK\r\n\r\n", None, linger=10.0)
    table.add(("k",), None, None, linger=0.05)
    time.sleep(0.06)
    assert table.expire() == 1
    assert ("k",) not in table
    assert ("j",) in table

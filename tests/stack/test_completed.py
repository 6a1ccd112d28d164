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

"""A MESSAGE forked in parallel to two phones of one user (issue 11, finding 9).

One phone declines at once (603), the other accepts a second later: the
sender must get that 200 and nothing may be stored -- storing on the 603
answered 202 *and* let the second phone's copy through, so the message
arrived twice (once now, once from the silo on the next REGISTER).
Only when every branch failed is the MESSAGE stored, once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.harness import ServerProcess
from tests.integration.sipwire import status_line
from tests.integration.test_proxy_forking import Ua, is_request, register, request


@dataclass
class Fork:
    server: ServerProcess
    alice: Ua
    declines: Ua
    accepts: Ua

    def send(self, call_id: str, body: str) -> tuple[str, str]:
        """alice's MESSAGE to bob, as each of bob's two phones received it."""
        request(self.server, self.alice, "MESSAGE", call_id, body=body)
        return (self.declines.wait_for(is_request("MESSAGE"), 3),
                self.accepts.wait_for(is_request("MESSAGE"), 3))

    def finals(self, seconds: float) -> list[str]:
        return [m for m in self.alice.recv_all(seconds)
                if m.startswith("SIP/2.0 ") and int(m[8:11]) >= 200]


@pytest.fixture
def fork(make_server: object) -> Iterator[Fork]:
    server = make_server(**{"tm.fr_timer": 5})  # type: ignore[operator]
    alice, declines, accepts = Ua(), Ua(), Ua()
    register(server, declines, [f"sip:bob@127.0.0.1:{declines.port}",
                                f"sip:bob@127.0.0.1:{accepts.port};x=second"])
    time.sleep(0.5)  # the (empty) dump the REGISTER started is over
    yield Fork(server, alice, declines, accepts)
    for ua in (alice, declines, accepts):
        ua.close()


def test_603_then_200_relays_the_200_and_stores_nothing(fork: Fork) -> None:
    first, second = fork.send("fork-603-200", "only once")
    fork.declines.reply(first, "603 Decline", to_tag="d1")
    early = fork.finals(1.0)
    assert early == [], f"the sender was answered while a branch could still succeed: {early}"
    fork.accepts.reply(second, "200 OK", to_tag="a1")
    finals = fork.finals(1.5)  # a store after the 200 would answer or show up by now
    assert [status_line(m) for m in finals] == ["SIP/2.0 200 OK"]
    assert fork.server.rows() == [], "a message one phone accepted was stored as well"


def test_every_branch_failing_stores_once(fork: Fork) -> None:
    first, second = fork.send("fork-603-480", "later")
    fork.declines.reply(first, "603 Decline", to_tag="d1")
    time.sleep(0.5)
    fork.accepts.reply(second, "480 Temporarily Unavailable", to_tag="a1")
    finals = fork.finals(2.0)
    assert [status_line(m) for m in finals] == ["SIP/2.0 202 Accepted"]
    rows = fork.server.rows()
    assert len(rows) == 1 and bytes(rows[0]["body"]).decode() == "later", rows

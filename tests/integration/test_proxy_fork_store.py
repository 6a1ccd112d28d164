"""A MESSAGE forked in parallel to two phones of one user (issue 11, finding 9).

One phone declines at once (603), the other accepts a second later: the
sender must get that 200 and nothing may be stored -- storing on the 603
answered 202 *and* let the second phone's copy through, so the message
arrived twice (once now, once from the silo on the next REGISTER).
Only when every branch failed is the MESSAGE stored, once.
"""

from __future__ import annotations

import time

from tests.integration.harness import ServerProcess
from tests.integration.sipwire import status_line
from tests.integration.test_proxy_forking import Ua, is_request, register, request


def _final(ua: Ua, seconds: float) -> str:
    return ua.wait_for(lambda m: m.startswith("SIP/2.0 ") and int(m[8:11]) >= 200, seconds)


def _two_phones(server: ServerProcess) -> tuple[Ua, Ua]:
    declines, accepts = Ua(), Ua()
    register(server, declines, [f"sip:bob@127.0.0.1:{declines.port}",
                                f"sip:bob@127.0.0.1:{accepts.port};x=second"])
    time.sleep(0.5)  # the (empty) dump the REGISTER started is over
    return declines, accepts


def test_603_then_200_relays_the_200_and_stores_nothing(make_server: object) -> None:
    server = make_server(**{"tm.fr_timer": 5})  # type: ignore[operator]
    alice = Ua()
    declines, accepts = _two_phones(server)
    try:
        request(server, alice, "MESSAGE", "fork-603-200", body="only once")
        first = declines.wait_for(is_request("MESSAGE"), 3)
        second = accepts.wait_for(is_request("MESSAGE"), 3)
        declines.reply(first, "603 Decline", to_tag="d1")
        early = [m for m in alice.recv_all(1.0) if m.startswith("SIP/2.0 ")
                 and int(m[8:11]) >= 200]
        assert early == [], f"the sender was answered while a branch could still succeed: {early}"
        accepts.reply(second, "200 OK", to_tag="a1")
        assert status_line(_final(alice, 3)) == "SIP/2.0 200 OK"
        time.sleep(0.5)  # a store after the answer would show up now
        assert server.rows() == [], "a message one phone accepted was stored as well"
    finally:
        for ua in (alice, declines, accepts):
            ua.close()


def test_every_branch_failing_stores_once(make_server: object) -> None:
    server = make_server(**{"tm.fr_timer": 5})  # type: ignore[operator]
    alice = Ua()
    declines, accepts = _two_phones(server)
    try:
        request(server, alice, "MESSAGE", "fork-603-480", body="later")
        first = declines.wait_for(is_request("MESSAGE"), 3)
        second = accepts.wait_for(is_request("MESSAGE"), 3)
        declines.reply(first, "603 Decline", to_tag="d1")
        time.sleep(0.5)
        accepts.reply(second, "480 Temporarily Unavailable", to_tag="a1")
        assert status_line(_final(alice, 3)) == "SIP/2.0 202 Accepted"
        rows = server.rows()
        assert len(rows) == 1 and bytes(rows[0]["body"]).decode() == "later", rows
    finally:
        for ua in (alice, declines, accepts):
            ua.close()

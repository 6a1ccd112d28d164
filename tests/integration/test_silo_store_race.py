"""A store that commits after the recipient's REGISTER dump looked (found by the soak).

On PostgreSQL the store and the dump run on two connections: a MESSAGE for an
offline bob whose INSERT commits just after bob's REGISTER started a dump that
found nothing stayed in the silo until bob's *next* REGISTER, and bob's next
live MESSAGE (relayed at once: no dump running) overtook it. A row committed
for a user who is online by then must be delivered now, before later ones.
The INSERT is held back with a SHARE lock on the table (a plain SELECT, what
the dump's scan is, still runs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.integration.harness import ServerProcess
from tests.integration.sipwire import header, status_line
from tests.integration.test_proxy_forking import Ua, register, request

TABLE = "silo"



def _final(ua: Ua, seconds: float) -> str:
    return ua.wait_for(lambda m: m.startswith("SIP/2.0 ") and int(m[8:11]) >= 200, seconds)


def test_row_committed_after_the_register_dump_is_delivered_before_later_messages(
    pg_db: str, make_server: Callable[..., ServerProcess]
) -> None:
    import asyncpg

    server = make_server(**{"msilo.db_url": pg_db, "auth.enabled": False, "tm.fr_timer": 4})
    loop = asyncio.new_event_loop()
    conn: Any = loop.run_until_complete(asyncpg.connect(pg_db.replace("postgresql", "postgres", 1)))
    alice, bob = Ua(), Ua()
    try:
        loop.run_until_complete(conn.execute(f"BEGIN; LOCK TABLE {TABLE} IN SHARE MODE"))
        request(server, alice, "MESSAGE", "race-1", body="first")
        time.sleep(0.5)  # its INSERT now waits for the lock
        register(server, bob, [f"sip:bob@127.0.0.1:{bob.port}"])
        time.sleep(1.0)  # the REGISTER's dump scanned an empty silo and ended
        loop.run_until_complete(conn.execute("COMMIT"))
        assert status_line(_final(alice, 5)) == "SIP/2.0 202 Accepted"
        request(server, alice, "MESSAGE", "race-2", body="second")
        got: list[tuple[str, str]] = []
        deadline = time.monotonic() + 8
        while len(got) < 2 and time.monotonic() < deadline:
            for message in bob.recv_all(min(1.0, deadline - time.monotonic())):
                if not message.startswith("MESSAGE "):
                    continue
                bob.reply(message, "200 OK")
                call_id = header(message, "Call-ID") or ""
                if call_id not in [c for c, _ in got]:  # not a retransmission
                    got.append((call_id, message))
        bodies = [m.rsplit("\r\n\r\n", 1)[1].rsplit("] ", 1)[-1] for _, m in got]
        assert bodies == ["first", "second"], f"bob got {bodies}, 'first' left in the silo"
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
        alice.close()
        bob.close()

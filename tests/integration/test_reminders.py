"""Reminders (msilo's ``reminder`` and ``snd_time``): a message stored with a send time
reaches the user's current contact at that time, From the reminder address; one the
contact does not take is kept for the next REGISTER."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.harness import ServerProcess
from tests.integration.push_servers import register, send_message
from tests.integration.silo_helpers import stats, wait_for
from tests.integration.sipwire import RawUA

MakeServer = Callable[..., ServerProcess]

ROUTE = '''
import time

from sipsilo.routing.default import route as default_route


async def route(ctx):
    remind_in = ctx.request.headers.get("X-Remind-In")
    if ctx.method == "MESSAGE" and remind_in:
        if await ctx.m_store("0", send_at=time.time() + float(remind_in)):
            ctx.t_reply(202, "Accepted")
        else:
            ctx.t_reply(503, "Service Unavailable")
        return
    await default_route(ctx)
'''


def _server(make_server: MakeServer, tmp_path: Path) -> ServerProcess:
    mod = tmp_path / "routes"
    mod.mkdir()
    (mod / "remind_route.py").write_text(ROUTE)
    return make_server(env={"PYTHONPATH": str(mod)}, **{
        "server.route": "remind_route:route", "msilo.reminder": "sip:reminder@127.0.0.1",
        "msilo.check_time": 1, "tm.fr_timer": 1.0})


def _remind(ua: RawUA, port: int, user: str, text: str, seconds: float) -> str:
    ua.send_request(f"MESSAGE sip:{user}@127.0.0.1:{port} SIP/2.0", [
        "From: <sip:alice@127.0.0.1>;tag=r1", f"To: <sip:{user}@127.0.0.1>",
        f"Call-ID: remind-{time.time_ns()}@127.0.0.1", "CSeq: 1 MESSAGE",
        "Content-Type: text/plain", f"X-Remind-In: {seconds}"], text)
    return ua.final()


def test_reminder_arrives_at_its_time_from_the_reminder_address(
        make_server: MakeServer, tmp_path: Path) -> None:
    server = _server(make_server, tmp_path)
    with RawUA(server.port) as bob, RawUA(server.port) as alice:
        assert register(bob, server.port, "bob", "").startswith("SIP/2.0 200")
        sent = time.monotonic()
        assert _remind(alice, server.port, "bob", "call mum", 2).startswith("SIP/2.0 202")
        assert [r["snd_time"] > 0 for r in server.rows()] == [True]
        got = bob.recv(5)
        assert got is not None
        text, addr = got
        took = time.monotonic() - sent
        assert 1.5 <= took <= 4.5, took  # due after 2 s, on a 1 s timer
        assert text.startswith(f"MESSAGE sip:bob@127.0.0.1:{bob.port} SIP/2.0")
        assert "From: <sip:reminder@127.0.0.1>;tag=" in text
        assert text.endswith("call mum")  # no "[Offline message" prefix: it is not one
        bob.reply(text, addr, "200 OK")
        wait_for(lambda: server.rows() == [], 5)
    assert stats(server)["msilo:dumped_reminders"] == 1


def test_reminder_not_taken_is_kept_for_the_next_register(
        make_server: MakeServer, tmp_path: Path) -> None:
    server = _server(make_server, tmp_path)
    with RawUA(server.port) as bob, RawUA(server.port) as alice:
        register(bob, server.port, "bob", "")
        assert _remind(alice, server.port, "bob", "later", 1).startswith("SIP/2.0 202")
        # bob's phone does not answer: after fr_timer the reminder is an ordinary message
        wait_for(lambda: [r["snd_time"] for r in server.rows()] == [0], 8)
        assert stats(server)["msilo:failed_reminders"] == 1
        while bob.recv(0.2) is not None:  # the unanswered reminder's retransmissions
            pass
        assert send_message(alice, server.port, "carol", "x").startswith("SIP/2.0 202")
        register(bob, server.port, "bob", "", cseq=2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = bob.recv(1)
            assert got is not None
            if got[0].startswith("MESSAGE") and "later" in got[0]:
                bob.reply(got[0], got[1], "200 OK")
                break
        wait_for(lambda: len(server.rows()) == 1, 5)  # carol's stays, bob's delivered

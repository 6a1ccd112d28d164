"""workers.auth_link: the supervisor's replay/failure table, asked over a real link."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from sipsilo.auth.nonce import NonceManager
from sipsilo.auth.shared import StateUnavailable
from sipsilo.transport import worker_link as wl
from sipsilo.workers.auth_link import AuthTable, LinkState

SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_000_000.0
KEY = "192.0.2.7 sip:bob@r"


def table(max_failures: int = 2) -> AuthTable:
    return AuthTable(SECRET, "r", nonce_expires=300, max_failures=max_failures, block_time=60)


def test_the_table_answers_the_three_questions() -> None:
    t = table()
    n = NonceManager(SECRET, "r").issue(T0)
    assert t.answer(b'["b","%s",%r]' % (KEY.encode(), T0)) == b"null"
    assert t.answer(b'["f","%s",%r]' % (KEY.encode(), T0)) == b"false"
    assert t.answer(b'["f","%s",%r]' % (KEY.encode(), T0 + 1)) == b"true"
    assert t.answer(b'["b","%s",%r]' % (KEY.encode(), T0 + 2)) == b"%r" % (T0 + 61)
    accept = b'["a","%s",%d,1,"sip:bob@r","%s",%r]' % (n.encode(), T0, KEY.encode(), T0)
    assert t.answer(accept) == b"true"
    assert t.answer(accept) == b"false"                       # nc 1 again
    assert t.answer(b'["b","%s",%r]' % (KEY.encode(), T0 + 3)) == b"null"  # login forgave


@pytest.mark.parametrize("question", [b"", b"{", b"[]", b'["x"]', b'["a",1]', b'"b"'])
def test_a_question_not_understood_gets_null(question: bytes) -> None:
    assert table().answer(question) == b"null"


async def _serve(sock: socket.socket, t: AuthTable) -> None:
    """The supervisor's part of Supervisor._from_worker for Q frames."""
    loop = asyncio.get_running_loop()
    reliable = wl.ReliableFrames(sock)

    def readable() -> None:
        frame = sock.recv(wl.MAX_FRAME)
        if frame and frame[0] == wl.QUESTION:
            reliable.send(bytes((wl.ANSWER,)) + frame[1:5] + t.answer(frame[5:]))

    loop.add_reader(sock.fileno(), readable)


def test_two_workers_ask_one_supervisor_table() -> None:
    async def main() -> None:
        t = table(max_failures=3)
        links, ends = [], []
        for _ in range(2):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            wl.tune(ours)
            await _serve(ours, t)
            link = wl.WorkerLink(theirs, lambda: None)
            link.start([])
            links.append(link)
            ends.append((ours, theirs))
        w0, w1 = LinkState(links[0]), LinkState(links[1])
        n = NonceManager(SECRET, "r").issue(T0)
        assert await w0.accept(n, int(T0), 1, "sip:bob@r", KEY, T0)
        assert not await w1.accept(n, int(T0), 1, "sip:bob@r", KEY, T0)
        assert await w1.accept(n, int(T0), 2, "sip:bob@r", KEY, T0)
        assert not await w0.failure(KEY, T0) and not await w1.failure(KEY, T0 + 1)
        assert await w0.failure(KEY, T0 + 2)
        assert await w1.blocked_until(KEY, T0 + 3) == T0 + 62
        for link in links:
            link.close()
        for ours, theirs in ends:
            asyncio.get_running_loop().remove_reader(ours.fileno())
            ours.close()
            theirs.close()

    asyncio.run(main())


def test_no_answer_or_no_supervisor_is_unavailable_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        link = wl.WorkerLink(theirs, lambda: None)
        link.start([])
        state = LinkState(link, timeout=0.05)           # nobody answers at the other end
        with caplog.at_level(logging.WARNING, logger="sipsilo.auth"):
            for _ in range(3):
                with pytest.raises(StateUnavailable):
                    await state.blocked_until(KEY, T0)
            link.close()                                # the supervisor's link is gone
            with pytest.raises(StateUnavailable):
                await state.failure(KEY, T0)
        ours.close()
        theirs.close()

    asyncio.run(main())
    lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None

"""transport.worker_link: location changes are never dropped, datagrams may be."""

from __future__ import annotations

import asyncio
import socket

from sipsilo.transport.worker_link import ReliableFrames


def _full_pair() -> tuple[socket.socket, socket.socket, int]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.setblocking(False)
    b.setblocking(False)
    filler = 0
    while True:
        try:
            a.send(b"S" + bytes(1000))
        except BlockingIOError:
            return a, b, filler
        filler += 1


async def _read_until(b: socket.socket, last: bytes) -> list[bytes]:
    """The frames on b, read as the loop lets the writer side flush, up to *last*."""
    got: list[bytes] = []
    for _ in range(200):
        await asyncio.sleep(0.005)  # the writer callback runs on this loop
        while True:
            try:
                got.append(b.recv(2000))
            except BlockingIOError:
                break
        if last in got:
            break
    return got


def test_changes_wait_in_order_while_the_link_is_full_and_go_first() -> None:
    async def main() -> None:
        a, b, filler = _full_pair()
        frames = ReliableFrames(a)
        frames.send(b"L1")
        frames.send(b"L2")
        assert frames.busy  # the supervisor drops datagrams for this worker now
        got = await _read_until(b, b"L2")
        assert got[:filler] == [b"S" + bytes(1000)] * filler
        assert got[filler:] == [b"L1", b"L2"]
        assert not frames.busy
        frames.send(b"L3")  # room again: straight through
        assert not frames.busy and b.recv(10) == b"L3"
        frames.close()
        a.close()
        b.close()

    asyncio.run(main())


def test_what_must_follow_the_queued_changes_waits_for_the_last_of_them() -> None:
    """A restarted worker gets its sockets (and starts serving) only after the
    whole location snapshot, however full the link was when it was queued."""
    async def main() -> None:
        a, b, filler = _full_pair()
        frames = ReliableFrames(a)
        ran: list[str] = []

        def sockets() -> None:  # as the supervisor's: straight on the link
            ran.append("sockets")
            a.send(b"F")

        frames.send(b"L1")
        frames.send(b"L2")
        frames.then(sockets)
        assert ran == []  # the snapshot is still waiting
        got = await _read_until(b, b"F")
        assert got[filler:] == [b"L1", b"L2", b"F"]
        frames.then(lambda: ran.append("now"))  # nothing queued: at once
        assert ran == ["sockets", "now"]
        frames.close()
        a.close()
        b.close()

    asyncio.run(main())

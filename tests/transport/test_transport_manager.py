"""Transports over real loopback sockets: which socket sends, what address we name."""

from __future__ import annotations

import asyncio
import socket

from sipsilo.flow import Flow, Target
from sipsilo.sip.errors import ParseError
from sipsilo.sip.message import Request
from sipsilo.stack.core import SipStack
from sipsilo.stack.handles import ServerTransaction
from sipsilo.transaction.timers import TimerConfig
from sipsilo.transport.manager import ListenSpec, Transports
from sipsilo.transport.stream import StreamLimits


def _ignore(data: bytes, flow: Flow) -> None:
    pass


def _ignore_error(data: bytes, flow: Flow, exc: ParseError) -> None:
    pass


def _client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def test_replies_leave_from_the_udp_socket_the_request_came_in_on() -> None:
    async def main() -> None:
        t = Transports([ListenSpec("udp", "127.0.0.1", 0), ListenSpec("udp", "127.0.0.1", 0)],
                       _ignore, _ignore_error)
        await t.start()
        try:
            first, second = t.udp
            with _client() as client:
                peer = client.getsockname()
                t.send_on_flow(b"reply", Flow("udp", second.local, peer))
                data, source = await asyncio.to_thread(client.recvfrom, 100)
                assert data == b"reply" and source[1] == second.port
                t.send_datagram(b"request", Target("udp", peer[0], peer[1], local=second.local))
                data, source = await asyncio.to_thread(client.recvfrom, 100)
                assert source[1] == second.port
                # and the Via names that very socket
                assert t.local_address("udp", peer[0], second.local) == ("127.0.0.1", second.port)
                t.send_datagram(b"new", Target("udp", peer[0], peer[1]))
                data, source = await asyncio.to_thread(client.recvfrom, 100)
                assert source[1] == first.port
        finally:
            t.close()

    asyncio.run(main())


def test_wildcard_listener_names_the_real_local_address() -> None:
    async def main() -> None:
        t = Transports([ListenSpec("udp", "0.0.0.0", 0), ListenSpec("tcp", "0.0.0.0", 0)],
                       _ignore, _ignore_error)
        await t.start()
        try:
            port = t.udp[0].port
            assert t.local_address("udp", "127.0.0.1") == ("127.0.0.1", port)
            flow = Flow("udp", t.udp[0].local, ("127.0.0.1", 5999))
            assert t.advertised(flow) == ("127.0.0.1", port)
            tcp_port = t.tcp_listeners[0].port
            tflow = Flow("tcp", ("0.0.0.0", tcp_port), ("127.0.0.1", 5999), 1)
            assert t.advertised(tflow) == ("127.0.0.1", tcp_port)
        finally:
            t.close()
        t = Transports([ListenSpec("udp", "0.0.0.0", 0)], _ignore, _ignore_error,
                       advertise=("sip.example.com", None))
        await t.start()
        try:
            assert t.local_address("udp", "127.0.0.1") == ("sip.example.com", t.udp[0].port)
            t.advertise = ("203.0.113.9", 5080)
            assert t.local_address("udp", "127.0.0.1") == ("203.0.113.9", 5080)
        finally:
            t.close()

    asyncio.run(main())


def _read_until_closed(sock: socket.socket) -> bool:
    sock.settimeout(3.0)
    try:
        while sock.recv(100):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_tcp_connection_cap_and_idle_timeout() -> None:
    async def main() -> None:
        t = Transports([ListenSpec("tcp", "127.0.0.1", 0)], _ignore, _ignore_error,
                       limits=StreamLimits(idle_timeout=0, max_connections=1))
        await t.start()
        port = t.tcp_listeners[0].port
        try:
            first = socket.create_connection(("127.0.0.1", port))
            await asyncio.sleep(0.1)
            second = socket.create_connection(("127.0.0.1", port))
            assert await asyncio.to_thread(_read_until_closed, second), "over the cap: refused"
            assert len(t.tcp) == 1
            first.close()
            second.close()
        finally:
            t.close()
        t = Transports([ListenSpec("tcp", "127.0.0.1", 0)], _ignore, _ignore_error,
                       limits=StreamLimits(idle_timeout=0.3))
        await t.start()
        port = t.tcp_listeners[0].port
        try:
            idle = socket.create_connection(("127.0.0.1", port))
            pinned = socket.create_connection(("127.0.0.1", port))
            await asyncio.sleep(0.1)
            conn = t.tcp.by_remote(pinned.getsockname())
            assert conn is not None
            t.tcp.pin(conn.id, 60)
            assert await asyncio.to_thread(_read_until_closed, idle), "idle: closed"
            assert len(t.tcp) == 1 and t.tcp.get(conn.id) is conn, "registered: kept"
            idle.close()
            pinned.close()
        finally:
            t.close()

    asyncio.run(main())


def test_tcp_response_reopens_a_connection_to_the_via_when_the_old_one_is_gone() -> None:
    """RFC 3261 §18.2.2: connection closed before the answer -> new one to sent-by."""
    async def main() -> None:
        answer = asyncio.Event()
        txs: list[ServerTransaction] = []

        def on_request(tx: ServerTransaction) -> None:
            txs.append(tx)
            answer.set()

        stack = SipStack(
            lambda s: Transports([ListenSpec("tcp", "127.0.0.1", 0)], s.receive,
                                 s.on_framing_error),
            TimerConfig(), on_request)
        t = stack.transports
        await t.start()
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def client_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.readuntil(b"\r\n\r\n")
            if not got.done():
                got.set_result(data)
            writer.close()

        uas = await asyncio.start_server(client_side, "127.0.0.1", 0)
        uas_port = uas.sockets[0].getsockname()[1]
        try:
            port = t.tcp_listeners[0].port
            req = Request("OPTIONS", f"sip:127.0.0.1:{port}")
            for name, value in (
                ("Via", f"SIP/2.0/TCP 127.0.0.1:{uas_port};branch=z9hG4bK-reopen"),
                ("Max-Forwards", "70"), ("From", "<sip:a@127.0.0.1>;tag=1"),
                ("To", f"<sip:127.0.0.1:{port}>"), ("Call-ID", "reopen@127.0.0.1"),
                ("CSeq", "1 OPTIONS"), ("Content-Length", "0"),
            ):
                req.headers.add(name, value)
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(req.serialise())
            await writer.drain()
            await asyncio.wait_for(answer.wait(), 2)
            writer.close()
            await asyncio.sleep(0.2)  # the server notices the close
            txs[0].reply(200)
            data = await asyncio.wait_for(got, 3)
            assert data.startswith(b"SIP/2.0 200")
        finally:
            uas.close()
            t.close()
            await stack.aclose()

    asyncio.run(main())


def test_a_connection_that_never_sends_a_message_is_closed_early() -> None:
    """Silent strangers get first_message_timeout, not the whole idle timeout."""

    async def main() -> None:
        t = Transports([ListenSpec("tcp", "127.0.0.1", 0)], _ignore, _ignore_error,
                       limits=StreamLimits(idle_timeout=100, message_timeout=0.3))
        await t.start()
        port = t.tcp_listeners[0].port
        try:
            silent = socket.create_connection(("127.0.0.1", port))
            talker = socket.create_connection(("127.0.0.1", port))
            talker.sendall(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            assert await asyncio.to_thread(_read_until_closed, silent), "silent: closed"
            assert len(t.tcp) == 1, "the one that spoke stays for the idle timeout"
            silent.close()
            talker.close()
        finally:
            t.close()

    asyncio.run(main())


def test_a_body_trickled_after_a_first_message_is_cut_at_the_message_deadline() -> None:
    """Sending one good message first buys no time for the next one."""

    async def main() -> None:
        got: list[bytes] = []
        t = Transports([ListenSpec("tcp", "127.0.0.1", 0)], lambda d, f: got.append(d),
                       _ignore_error, limits=StreamLimits(idle_timeout=100, message_timeout=0.5))
        await t.start()
        port = t.tcp_listeners[0].port
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"
                         b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 100\r\n\r\n")
            loop = asyncio.get_running_loop()
            started = loop.time()
            closed = False
            for _ in range(30):  # a body byte every 0.1 s, 3 s at most
                await asyncio.sleep(0.1)
                try:
                    sock.sendall(b"x")
                except OSError:
                    closed = True
                    break
                if len(t.tcp) == 0:
                    closed = True
                    break
            assert closed and loop.time() - started < 1.5
            assert len(got) == 1, "the first message was delivered"
            sock.close()
        finally:
            t.close()

    asyncio.run(main())


def test_a_target_naming_another_peers_connection_id_gets_its_own_connection() -> None:
    """Connection ids are counted per process: a Target built from a flow kept
    by another worker may carry an id that here is somebody else's connection.
    The message goes to the Target's address, never over that connection."""
    async def main() -> None:
        t = Transports([ListenSpec("tcp", "127.0.0.1", 0)], _ignore, _ignore_error)
        await t.start()
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.set_result(await reader.readexactly(5))
            writer.close()

        bob = await asyncio.start_server(peer, "127.0.0.1", 0)
        bob_port = bob.sockets[0].getsockname()[1]
        carol_reader, carol_writer = await asyncio.open_connection(
            "127.0.0.1", t.tcp_listeners[0].port)
        try:
            for _ in range(100):  # until the listener has taken carol's connection
                if t.tcp.by_remote(carol_writer.get_extra_info("sockname")) is not None:
                    break
                await asyncio.sleep(0.01)
            carol = t.tcp.by_remote(carol_writer.get_extra_info("sockname"))
            assert carol is not None
            flow = await t.send(b"hello", Target("tcp", "127.0.0.1", bob_port, conn_id=carol.id))
            assert await asyncio.wait_for(got, 3) == b"hello"
            assert flow.conn_id != carol.id and flow.remote == ("127.0.0.1", bob_port)
            # over carol's own connection when the Target is carol's
            await t.send(b"carol", Target("tcp", *carol.remote, conn_id=carol.id))
            assert await asyncio.wait_for(carol_reader.readexactly(5), 3) == b"carol"
        finally:
            carol_writer.close()
            bob.close()
            t.close()

    asyncio.run(main())


def test_the_private_listener_opens_before_the_public_ones_and_is_never_sent_from() -> None:
    """open_private() comes first, so that the owner of every stream flow is
    known before the first client connects; it is listed last all the same."""
    async def main() -> None:
        t = Transports([ListenSpec("tcp", "127.0.0.1", 0)], _ignore, _ignore_error)
        host, port = await t.open_private()
        try:
            assert host == "127.0.0.1" and port > 0 and t.tcp_listeners == []
            _reader, writer = await asyncio.open_connection(host, port)  # accepting already
            writer.close()
            await t.start()
            assert [(p.transport, p.port) for p in t.tcp_listeners][-1] == ("tcp", port)
            assert t.local_address("tcp", "127.0.0.1") != (host, port)
        finally:
            t.close()

    asyncio.run(main())

"""The hop budget in the connection registry, without sockets: connections
are made by their listener as asyncio would, on a transport that records
whether it was closed."""

from __future__ import annotations

from typing import Any

import pytest
from tests.fakes import virtual

from sipsilo.transport.stream import StreamLimits
from sipsilo.transport.tcp import TcpConnection, TcpListener, TcpRegistry

PUBLIC = StreamLimits(max_connections=3, max_connections_per_ip=2)
HOP = StreamLimits(max_connections=4, max_connections_per_ip=2, message_timeout=3.0)
CLIENT_PORT = 5060
HOP_PORT = 41000


class FakeTransport:
    """What a TcpConnection asks of its asyncio transport."""

    def __init__(self, peer: tuple[str, int], local: tuple[str, int]) -> None:
        self._extra = {"peername": peer, "sockname": local}
        self.closed = False
        self.written: list[bytes] = []

    def get_extra_info(self, name: str) -> Any:
        return self._extra.get(name)

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def _world() -> tuple[TcpRegistry, TcpListener, TcpListener]:
    """A registry with a public listener and a hop listener (never started: no sockets)."""
    registry = TcpRegistry(lambda data, flow: None, lambda data, flow, exc: None,
                           limits=PUBLIC, hop_limits=HOP)
    return (registry, TcpListener("127.0.0.1", CLIENT_PORT, registry),
            TcpListener("127.0.0.1", HOP_PORT, registry, hop=True))


_next_port = iter(range(30000, 40000))


def _accept(listener: TcpListener, host: str) -> tuple[TcpConnection, FakeTransport]:
    """A connection from host accepted on listener; its transport says if it was refused."""
    conn = listener._accept()
    transport = FakeTransport((host, next(_next_port)), (listener.host, listener.port))
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


@virtual
async def test_a_stranger_filling_the_hop_takes_no_client_slot_nor_clients_the_hop() -> None:
    registry, public, hop = _world()
    # A stranger at 127.0.0.1 fills its share of the hop; each one more takes the
    # place of its oldest (unproven) one.
    stranger = [_accept(hop, "127.0.0.1")[1] for _ in range(5)]
    assert [t.closed for t in stranger] == [True, True, True, False, False]
    # ... and every client slot is still free, for every address.
    clients = [_accept(public, host)[1] for host in
               ("127.0.0.1", "127.0.0.1", "192.0.2.1", "192.0.2.2")]
    assert [t.closed for t in clients] == [False, False, False, True]  # public cap: 3
    # Clients filling the public cap leave the hop to other peers.
    assert not _accept(hop, "192.0.2.10")[1].closed
    assert not _accept(hop, "192.0.2.11")[1].closed
    assert not _accept(hop, "192.0.2.12")[1].closed  # hop in all: 4, the oldest went
    assert stranger[3].closed and not stranger[4].closed
    assert (len(registry), registry.hop_connections) == (7, 4)
    assert (registry.refusals.total, registry.hop_refusals.total) == (1, 0)
    assert registry.hop_evicted == 4


@virtual
async def test_a_proven_hop_connection_keeps_its_place_a_full_proven_hop_refuses() -> None:
    registry, _, hop = _world()
    peers = [_accept(hop, "127.0.0.1") for _ in range(2)]
    for conn, _ in peers:
        registry.hop_request(conn.id, signed=True)
    newcomer = _accept(hop, "127.0.0.1")[1]
    assert newcomer.closed and not any(t.closed for _, t in peers)
    assert (registry.hop_refusals.total, registry.hop_evicted) == (1, 0)


@virtual
async def test_opening_a_hop_counts_against_the_hop_budget_not_the_public_one() -> None:
    registry, public, hop = _world()
    for host in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        _accept(public, host)
    with pytest.raises(ConnectionError, match="3 tcp connections open"):
        await registry.connect("192.0.2.50", 5060)
    # one we open to another worker's hop joins the hop budget
    ours = TcpConnection(registry, None, hop=True)
    ours.connection_made(FakeTransport(("127.0.0.1", 41001), ("127.0.0.1", 50000)))  # type: ignore[arg-type]
    assert registry.get(ours.id) is ours and ours.proof_due is None
    accepted = [_accept(hop, host) for host in ("192.0.2.10", "192.0.2.11", "192.0.2.12")]
    # The hop is full; one more of ours takes the place of the oldest unproven one.
    again = TcpConnection(registry, None, hop=True)
    again.connection_made(FakeTransport(("127.0.0.1", 41003), ("127.0.0.1", 50001)))  # type: ignore[arg-type]
    assert registry.get(again.id) is again and accepted[0][1].closed
    assert registry.hop_evicted == 1
    # Full of proven ones (peers'), a new one of ours is refused.
    for conn, _ in accepted[1:]:
        registry.hop_request(conn.id, signed=True)
    with pytest.raises(ConnectionError, match="4 hop connections open"):
        await registry.connect("127.0.0.1", 41002, hop=True)


@virtual
async def test_a_hop_connection_is_closed_on_its_first_unsigned_request_kept_once_proven() -> None:
    registry, _, hop = _world()
    stranger, stranger_socket = _accept(hop, "127.0.0.1")
    assert stranger.proof_due is not None
    registry.hop_request(stranger.id, signed=False)
    assert stranger_socket.closed
    peer, peer_socket = _accept(hop, "127.0.0.1")
    registry.hop_request(peer.id, signed=True)
    assert peer.proof_due is None
    registry.hop_request(peer.id, signed=False)  # a peer's bad one: 403, kept
    assert not peer_socket.closed


@virtual
async def test_a_silent_or_chatty_stranger_on_the_hop_goes_at_the_proof_deadline() -> None:
    registry, public, hop = _world()
    silent, silent_socket = _accept(hop, "127.0.0.1")
    chatty, chatty_socket = _accept(hop, "192.0.2.9")
    client, client_socket = _accept(public, "192.0.2.9")
    # The chatty one keeps sending (a response: no proof) ...
    chatty.data_received(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert chatty.spoke
    # ... and 3 s pass since the accepts (moved back rather than waited for).
    for conn in (silent, chatty):
        assert conn.proof_due is not None
        conn.proof_due -= HOP.message_timeout
    client.partial_since = client.last_active = client.last_active - HOP.message_timeout
    assert registry.close_idle() == 2
    assert (silent_socket.closed, chatty_socket.closed, client_socket.closed) == \
        (True, True, False)  # the client's deadline is the public 10 s

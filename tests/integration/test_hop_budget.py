"""A stranger at the workers' hop listeners ([cluster] advertise: reachable).

`sipsilo serve` with two workers, each with its hop listener on 127.0.0.1
(advertise port P: worker 0 at P, worker 1 at P + 1), a public cap of 4 TCP
connections per worker. A stranger keeps as many connections open to both
hop listeners as they take: clients still connect and register, the workers'
hand-over still goes through, and what the stranger holds is closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from tests.integration.harness import ServerProcess, free_port
from tests.integration.secure_clients import SecureClient
from tests.integration.silo_helpers import stats, wait_for
from tests.integration.sipwire import read_reply
from tests.integration.test_connection_hygiene import server_closed
from tests.integration.test_workers import DOMAIN, _at_the_other_worker, _live_udp, _per_worker

MakeServer = Callable[..., ServerProcess]
STRANGER_CONNECTIONS = 20  # per hop listener, more than the hop takes from one address


def _hop_ports(exclude: set[int]) -> int:
    """P with P and P + 1 free (worker i's hop listener binds P + i)."""
    for _ in range(50):
        port = free_port(exclude)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row")


class Stranger:
    """Keeps STRANGER_CONNECTIONS connections open to each port, reopening those
    the server closes, silent, until stopped; counts the closes it sees."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stranger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        held: dict[int, list[socket.socket]] = {port: [] for port in self.ports}
        while not self._stop.is_set():
            for port, socks in held.items():
                for sock in list(socks):
                    if server_closed(sock):
                        socks.remove(sock)
                        sock.close()
                        self.closed_by_server += 1
                while len(socks) < STRANGER_CONNECTIONS:
                    socks.append(socket.create_connection(("127.0.0.1", port)))
            self._stop.wait(0.1)
        for socks in held.values():
            for sock in socks:
                sock.close()


def test_a_stranger_at_the_hop_locks_out_neither_clients_nor_the_hand_over(
        make_server: MakeServer, tmp_path: Path) -> None:
    ports = {"udp": free_port()}
    ports["tcp"] = free_port(set(ports.values()))
    hop = _hop_ports(set(ports.values()))
    server = make_server(data_dir=tmp_path / "hop", port=ports["udp"], **{
        "server.workers": 2, "msilo.add_date": 0, "server.tcp_max_connections": 4,
        "server.listen": [f"{kind}:127.0.0.1:{port}" for kind, port in ports.items()],
        "cluster.advertise": f"127.0.0.1:{hop}",
    })
    bob = _at_the_other_worker(server, ports)  # worker 0 has handed over to worker 1
    taken = int(stats(server)["msilo:taken_over"])
    with Stranger([hop, hop + 1]) as stranger:
        # Both hop budgets full: 8 from 127.0.0.1 each (worker 1's include worker
        # 0's hand-over connection; worker 0 counts that one too, as opened).
        wait_for(lambda: _per_worker(server, "tcp:hop_connections") == [9, 8], 10)
        wait_for(lambda: stranger.closed_by_server >= 2 * STRANGER_CONNECTIONS - 15, 10)
        carol = SecureClient("tcp", ports["tcp"])
        assert (carol.register("carol", DOMAIN) or "").startswith("SIP/2.0 200")
        assert _live_udp(ports["udp"], bob, "past the stranger") == "SIP/2.0 200 OK"
        assert int(stats(server)["msilo:taken_over"]) == taken + 1
        # Silent connections do not outlive the proof deadline (3 s): the
        # stranger has to keep reconnecting.
        seen = stranger.closed_by_server
        wait_for(lambda: stranger.closed_by_server >= seen + 15, 10)
    figures = stats(server)
    assert figures["tcp:refused_connections"] == 0
    # The strangers took each other's places (the oldest unproven one goes).
    assert figures["tcp:hop_evicted_connections"] > 0
    # A stranger's request on the hop: 403, and the connection closed.
    wait_for(lambda: _per_worker(server, "tcp:hop_connections") == [1, 1], 10)
    with contextlib.closing(socket.create_connection(("127.0.0.1", hop + 1))) as sock:
        sock.sendall(carol.message("alice", "bob", DOMAIN, "let me in").encode())
        answer, closed = read_reply(sock, 5, until_closed=True)
    assert answer.startswith(b"SIP/2.0 403") and closed
    carol.close()
    bob.close()

"""What counts as one of our own addresses: listeners, advertise, wildcard."""

from __future__ import annotations

import asyncio

from sipsilo.transport.manager import ListenSpec, Transports, is_machine_address


def test_machine_addresses_are_those_this_host_can_bind() -> None:
    assert is_machine_address("127.0.0.1")
    assert not is_machine_address("192.0.2.1")  # TEST-NET-1: never ours
    assert not is_machine_address("example.com")


def test_wildcard_listener_and_advertised_address_are_ours() -> None:
    async def main() -> None:
        tr = Transports([ListenSpec("udp", "0.0.0.0", 0)], lambda d, f: None,
                        lambda d, f, e: None, advertise=("sip.example.com", 5080))
        await tr.start()
        try:
            port = tr.bound()[0][2]
            assert tr.is_local_address("127.0.0.1", port)   # behind the wildcard
            assert tr.is_local_address("127.0.0.2", port)   # any address of this machine
            assert not tr.is_local_address("192.0.2.1", port)
            assert not tr.is_local_address("127.0.0.1", port + 1)
            assert tr.is_local_address("sip.example.com", 5080)
            assert not tr.is_local_address("sip.example.com", 5081)
        finally:
            tr.close()

    asyncio.run(main())

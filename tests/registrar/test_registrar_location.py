"""MemoryLocationService and the sweep: ordering, normalisation, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from sipsilo.flow import Flow
from sipsilo.registrar import (
    Binding,
    MemoryLocationService,
    normalise_aor,
    sweep,
)

T = TypeVar("T")
FLOW = Flow("udp", ("192.0.2.1", 5060), ("192.0.2.10", 5060))
AOR = "sip:alice@example.com"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def binding(
    contact: str,
    expires_at: float = 1000.0,
    q: float = 1.0,
    registered_at: float = 0.0,
    aor: str = AOR,
) -> Binding:
    return Binding(
        aor=aor,
        contact=contact,
        params=(),
        expires_at=expires_at,
        q=q,
        call_id="c1",
        cseq=1,
        flow=FLOW,
        registered_at=registered_at,
    )


def contacts(bindings: list[Binding]) -> list[str]:
    return [b.contact for b in bindings]


def test_lookup_orders_by_q_then_most_recent() -> None:
    loc = MemoryLocationService()

    async def go() -> list[Binding]:
        await loc.save(binding("sip:a@h", q=0.5, registered_at=1))
        await loc.save(binding("sip:b@h", q=1.0, registered_at=1))
        await loc.save(binding("sip:c@h", q=0.5, registered_at=5))
        await loc.save(binding("sip:d@h", q=0.0, registered_at=9))
        return await loc.lookup(AOR, now=10)

    assert contacts(run(go())) == ["sip:b@h", "sip:c@h", "sip:a@h", "sip:d@h"]


def test_save_replaces_same_contact() -> None:
    loc = MemoryLocationService()

    async def go() -> list[Binding]:
        await loc.save(binding("sip:a@h", expires_at=100))
        await loc.save(binding("sip:a@h", expires_at=200))
        return await loc.lookup(AOR, now=0)

    found = run(go())
    assert [(b.contact, b.expires_at) for b in found] == [("sip:a@h", 200)]
    assert len(loc) == 1


def test_lookup_excludes_expired_before_any_sweep() -> None:
    loc = MemoryLocationService()

    async def go() -> tuple[list[Binding], list[Binding], list[Binding]]:
        await loc.save(binding("sip:a@h", expires_at=100))
        await loc.save(binding("sip:b@h", expires_at=200))
        return (
            await loc.lookup(AOR, now=99.9),
            await loc.lookup(AOR, now=100),  # expires_at is exclusive
            await loc.lookup(AOR, now=200),
        )

    before, at_a, at_b = run(go())
    assert contacts(before) == ["sip:a@h", "sip:b@h"]
    assert contacts(at_a) == ["sip:b@h"]
    assert at_b == []
    assert len(loc) == 2  # still stored until swept


def test_sweep_drops_and_returns_expired_only() -> None:
    loc = MemoryLocationService()

    async def go() -> tuple[list[Binding], list[Binding], list[Binding]]:
        await loc.save(binding("sip:a@h", expires_at=100))
        await loc.save(binding("sip:b@h", expires_at=300))
        await loc.save(binding("sip:c@h", expires_at=100, aor="sip:bob@example.com"))
        first = await sweep(loc, 150)
        second = await sweep(loc, 150)
        rest = await loc.list(now=None)
        return first, second, rest

    first, second, rest = run(go())
    assert sorted(contacts(first)) == ["sip:a@h", "sip:c@h"]
    assert second == []
    assert contacts(rest) == ["sip:b@h"]
    assert len(loc) == 1


def test_refresh_is_not_swept_by_its_old_heap_entry() -> None:
    loc = MemoryLocationService()

    async def go() -> tuple[list[Binding], list[Binding]]:
        await loc.save(binding("sip:a@h", expires_at=100))
        await loc.save(binding("sip:a@h", expires_at=500))  # refresh
        swept = await loc.expire(200)
        return swept, await loc.lookup(AOR, now=200)

    swept, found = run(go())
    assert swept == []
    assert contacts(found) == ["sip:a@h"]


def test_removed_binding_not_returned_by_expire() -> None:
    loc = MemoryLocationService()

    async def go() -> tuple[Binding | None, Binding | None, list[Binding]]:
        await loc.save(binding("sip:a@h", expires_at=100))
        gone = await loc.remove(AOR, "sip:a@h")
        again = await loc.remove(AOR, "sip:a@h")
        return gone, again, await loc.expire(1000)

    gone, again, swept = run(go())
    assert gone is not None and gone.contact == "sip:a@h"
    assert again is None
    assert swept == []
    assert len(loc) == 0


def test_heap_stays_bounded_under_many_refreshes() -> None:
    loc = MemoryLocationService()

    async def go() -> None:
        for i in range(1000):
            await loc.save(binding("sip:a@h", expires_at=100 + i))

    run(go())
    assert len(loc) == 1
    assert len(loc._heap) <= 2 * len(loc) + 65


def test_remove_all_and_list() -> None:
    loc = MemoryLocationService()
    bob = "sip:bob@example.com"

    async def go() -> tuple[list[Binding], list[Binding], list[Binding], list[Binding]]:
        await loc.save(binding("sip:a@h", expires_at=100))
        await loc.save(binding("sip:b@h", expires_at=50))
        await loc.save(binding("sip:x@h", aor=bob))
        everything = await loc.list()
        live = await loc.list(AOR, now=60)
        removed = await loc.remove_all(AOR)
        return everything, live, removed, await loc.list()

    everything, live, removed, after = run(go())
    # sorted by AoR, then lookup order
    assert [(b.aor, b.contact) for b in everything] == [
        (AOR, "sip:a@h"),
        (AOR, "sip:b@h"),
        (bob, "sip:x@h"),
    ]
    assert contacts(live) == ["sip:a@h"]
    assert sorted(contacts(removed)) == ["sip:a@h", "sip:b@h"]
    assert contacts(after) == ["sip:x@h"]


def test_aor_keys_are_normalised() -> None:
    assert normalise_aor("sips:Alice@EXAMPLE.com:5061;transport=tls") == "sip:Alice@example.com"
    assert normalise_aor("sip:alice@Example.COM") == "sip:alice@example.com"
    assert normalise_aor("not a uri") == "not a uri"
    loc = MemoryLocationService()

    async def go() -> tuple[list[Binding], list[Binding]]:
        await loc.save(binding("sip:a@h", aor="sips:Alice@EXAMPLE.COM"))
        return (
            await loc.lookup("sip:Alice@example.com", now=0),
            await loc.lookup("sip:alice@example.com", now=0),  # user case matters
        )

    found, other = run(go())
    assert [b.aor for b in found] == ["sip:Alice@example.com"]
    assert other == []


def test_remaining_rounds_up() -> None:
    b = binding("sip:a@h", expires_at=1_700_000_000.0 + 3600)
    assert b.remaining(1_700_000_000.0) == 3600
    assert b.remaining(1_700_000_000.0 + 3599.5) == 1
    assert b.remaining(1_700_000_000.0 + 3600) == 0
    assert b.remaining(1_700_000_000.0 + 4000) == 0


def test_binding_keeps_the_stacks_own_flow() -> None:
    # One Flow type for the transports, the stack and the registrar: no conversion.
    from sipsilo.transport.flow import Flow as TransportFlow

    assert TransportFlow is Flow
    flow = Flow("tcp", ("10.0.0.1", 5060), ("10.0.0.2", 40000), 7)
    b = Binding(aor=AOR, contact="sip:a@h", params=(), expires_at=1.0, call_id="c", cseq=1,
                flow=flow)
    assert b.flow is flow and b.flow.reliable

"""registrar.replicated: every worker's copy of the location service agrees."""

from __future__ import annotations

import asyncio

from sipsilo.flow import Flow
from sipsilo.registrar.binding import Binding
from sipsilo.registrar.replicated import ReplicatedLocation


def _binding(aor: str, contact: str, expires_at: float = 1000.0) -> Binding:
    return Binding(
        aor=aor, contact=contact, params=[], expires_at=expires_at, call_id="c", cseq=1,
        flow=Flow("udp", ("127.0.0.1", 5060), ("10.0.0.7", 5070)),
    )


def _pair() -> tuple[ReplicatedLocation, ReplicatedLocation]:
    # What the supervisor does: each change published by one is applied by the other.
    b: list[ReplicatedLocation] = []
    a = ReplicatedLocation(lambda change: b[0].apply(change))
    b.append(ReplicatedLocation(lambda change: a.apply(change)))
    return a, b[0]


def test_changes_made_in_one_worker_are_seen_in_the_other() -> None:
    async def main() -> None:
        a, b = _pair()
        await a.save(_binding("sip:bob@x", "sip:bob@10.0.0.7:5070"))
        await a.save(_binding("sip:bob@x", "sip:bob@10.0.0.8:5070"))
        await b.save(_binding("sip:carol@x", "sip:carol@10.0.0.9:5070"))
        assert {x.contact for x in await b.lookup("sip:bob@x", 10.0)} == {
            "sip:bob@10.0.0.7:5070", "sip:bob@10.0.0.8:5070"}
        assert len(await a.lookup("sip:carol@x", 10.0)) == 1
        flow = (await b.lookup("sip:bob@x", 10.0))[0].flow
        assert flow.remote[0] == "10.0.0.7" and flow.local[1] == 5060
        await a.remove("sip:bob@x", "sip:bob@10.0.0.7:5070")
        assert [x.contact for x in await b.lookup("sip:bob@x", 10.0)] == ["sip:bob@10.0.0.8:5070"]
        await b.remove_all("sip:bob@x")
        assert await a.lookup("sip:bob@x", 10.0) == []
        # expiry is local and the same everywhere: nothing is sent for it
        assert [x.contact for x in await a.expire(2000.0)] == ["sip:carol@10.0.0.9:5070"]
        assert [x.contact for x in await b.expire(2000.0)] == ["sip:carol@10.0.0.9:5070"]
        assert len(a) == len(b) == 0

    asyncio.run(main())


def test_unknown_change_is_ignored() -> None:
    import pickle

    a, _ = _pair()
    a.apply(pickle.dumps(("drop_everything", ())))
    assert len(a) == 0

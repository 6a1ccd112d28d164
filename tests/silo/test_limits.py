"""The storage limits' glue (silo.limits) without sockets: the token bucket on
a fake clock, and the caps on a real SQLite store."""

from __future__ import annotations

from pathlib import Path

from sipsilo.silo.limits import KEY_TTL, Caps, SourceRate, StoreQuota, fit_refusal, source_key
from tests.clock import Clock

from .helpers import msg, opened, run


def test_token_bucket_burst_then_rate_per_source() -> None:
    clock = Clock()
    bucket = SourceRate(2.0, 3, clock=clock, max_sources=2)
    assert [bucket.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.wait("a") == 0.5  # empty: the next token in 1/rate s
    assert bucket.wait("b") == 0.0  # another source has its own bucket
    clock.now += 0.5
    assert bucket.wait("a") == 0.0
    assert bucket.wait("a") > 0
    clock.now += 60
    assert [bucket.wait("a") for _ in range(4)][-1] > 0  # refilled to the burst only
    bucket.wait("c")  # a third source: the least recently seen ("b") is dropped
    assert set(bucket._buckets) == {"a", "c"}


def test_an_ipv6_host_is_one_source_per_64() -> None:
    bucket = SourceRate(1.0, 2, clock=Clock())
    assert [bucket.wait(f"2001:db8:1:2::{i:x}") for i in range(3)][-1] > 0
    assert bucket.wait("2001:db8:1:3::1") == 0.0  # another /64
    assert source_key("192.0.2.7") == "192.0.2.7"


def test_fit_refusal_names_the_field_and_limit() -> None:
    ok = msg(1)
    assert fit_refusal(ok) is None
    for field, value, code, words in (
        ("username", "u" * 65, 414, "recipient user longer than 64"),
        ("callid", "c" * 129, 400, "Call-ID longer than 128"),
        ("src_addr", "sip:" + "a" * 252, 400, "From URI longer than 255"),
        ("callid", "a\x00b", 400, "NUL character in Call-ID"),
        ("extra_hdrs", "X: " + "x" * 65535 + "\r\n", 413, "headers to store"),
        ("body", b"b" * 65536, 413, "65536 > 65535"),
    ):
        m = msg(1)
        setattr(m, field, value)
        got = fit_refusal(m)
        assert got is not None and got.status == code and words in got.reason, (field, got)


def test_caps_on_cached_counts(tmp_path: Path) -> None:
    async def body() -> None:
        store = await opened(tmp_path / "m.db")
        clock = Clock()
        quota = StoreQuota(store, Caps(per_recipient=2, per_sender=3, total=4), clock=clock)

        async def put(user: str) -> int | None:
            m = msg(0, user)
            refused = await quota.refusal(m, 2000)
            if refused is not None:
                return refused.status
            await store.store(m)
            quota.stored(m)
            return None

        assert [await put("bob") for _ in range(3)] == [None, None, 486]
        assert await put("carol") is None
        assert await put("dave") == 507  # alice's 3 messages: the sender cap
        # Bob's mailbox emptied by a delivery: the cached count holds until it
        # is read again.
        for row in await store.list_messages("bob"):
            await store.confirm(row.id)
        assert await put("bob") == 486  # still the count of 2 read before (cached)
        clock.now += KEY_TTL
        assert await put("bob") is None
        await store.close()

    run(body)

"""Group commit, two instances on one file, and durability across SIGKILL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from .helpers import msg, opened, raw, run


def test_group_commit_each_store_visible_to_other_connection_on_return(tmp_path: Path) -> None:
    path = tmp_path / "m.db"

    async def body() -> None:
        s = await opened(path)
        other = raw(path)
        seen: list[int] = []

        async def one(i: int) -> None:
            rid = await s.store(msg(i, body=f"m{i}".encode()))
            # Committed before store() returned: another connection sees it right now.
            row = other.execute("select body from silo where id = ?", (rid,)).fetchone()
            assert row is not None and row[0] == f"m{i}".encode()
            seen.append(rid)

        await asyncio.gather(*(one(i) for i in range(500)))
        assert len(set(seen)) == 500
        assert other.execute("select count(*) from silo").fetchone()[0] == 500
        st = s.stats
        assert st.stores == 500
        assert st.transactions < 500 and st.max_batch > 1  # batched, not one commit each
        await s.close()

    run(body)


def test_two_instances_deliver_each_once_in_order(tmp_path: Path) -> None:
    """Two stores on one file (two server processes) race to deliver one account."""
    path = tmp_path / "m.db"
    n = 40

    async def body() -> None:
        a = await opened(path)
        b = await opened(path)
        ids = [await a.store(msg(i)) for i in range(n)]
        await a.store(msg(99, user="other"))
        delivered: list[int] = []
        in_flight: set[int] = set()
        rng = random.Random(7)

        async def worker(store: object, owner: str) -> None:
            from sipsilo.silo.store import SiloStore

            assert isinstance(store, SiloStore)
            idle = 0
            while len(delivered) < n and idle < 2000:
                m = await store.claim_next("bob", "example.com", owner, 5000, 30)
                if m is None:
                    idle += 1
                    await asyncio.sleep(0)
                    continue
                # Never a row already in flight, never one past an undelivered earlier one.
                assert not in_flight, (owner, m.id, in_flight)
                assert m.id not in delivered
                assert m.id == min(set(ids) - set(delivered)), (m.id, delivered)
                in_flight.add(m.id)
                await asyncio.sleep(rng.random() * 0.002)
                if rng.random() < 0.2:  # a failed attempt: released and retried later
                    in_flight.discard(m.id)
                    assert await store.release(m.id, owner)
                    continue
                delivered.append(m.id)
                in_flight.discard(m.id)
                assert await store.confirm(m.id, owner)

        await asyncio.gather(worker(a, "A"), worker(b, "B"))
        assert delivered == ids
        assert [m.username for m in await b.list_messages()] == ["other"]
        await a.close()
        await b.close()

    run(body)


def test_two_processes_never_claim_the_same_row(tmp_path: Path) -> None:
    """Real processes: each claims with a long lease and never confirms; the union of
    claims must be exactly the first row (the second claimer is always blocked)."""
    path = tmp_path / "m.db"

    async def setup() -> None:
        s = await opened(path)
        for i in range(20):
            await s.store(msg(i))
        await s.close()

    run(setup)
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from sipsilo.silo.sqlite import SqliteSiloStore
        async def main():
            s = SqliteSiloStore({str(path)!r})
            await s.open()
            got = []
            for _ in range(200):
                m = await s.claim_next("bob", "example.com", sys.argv[1], 5000, 3600)
                if m is not None:
                    got.append(m.id)
            await s.close()
            print(",".join(map(str, got)))
        asyncio.run(main())
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, f"P{k}"], stdout=subprocess.PIPE, text=True)
        for k in range(3)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    claimed = [int(x) for o in outs for x in o.split(",") if x]
    # The first claimer takes row 1, then (own claims don't block it) the rest; the
    # others must get nothing at all, since row 1 of another owner blocks them.
    winners = [o for o in outs if o]
    assert len(winners) == 1
    assert sorted(claimed) == list(range(1, 21)) and len(set(claimed)) == len(claimed)


def test_stored_ids_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from sipsilo.silo.sqlite import SqliteSiloStore
        from sipsilo.silo.store import NewMessage
        async def main():
            s = SqliteSiloStore({str(path)!r})
            await s.open()
            print("ready", flush=True)
            async def one(i):
                rid = await s.store(NewMessage("sip:a@x", "sip:b@x", "b", "x", 1, 10**10,
                                               "text/plain", b"m%d" % i))
                sys.stdout.write("%d\\n" % rid)
                sys.stdout.flush()
            i = 0
            while True:
                await asyncio.gather(*(one(i + k) for k in range(50)))
                i += 50
        asyncio.run(main())
        """
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    printed: list[int] = []
    while len(printed) < 2000:
        line = p.stdout.readline()
        assert line, "child died"
        printed.append(int(line))
    os.kill(p.pid, signal.SIGKILL)
    rest = p.stdout.read()
    p.wait()
    printed += [int(x) for x in rest.split(b"\n")[:-1]]  # a torn last line is not printed
    conn = raw(path)
    present = {r[0] for r in conn.execute("select id from silo")}
    missing = set(printed) - present
    assert not missing, f"{len(missing)} acknowledged ids lost"
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"


def test_a_writer_lock_held_elsewhere_fails_the_store_after_busy_timeout(tmp_path: Path) -> None:
    # Another sipsilo process (a worker) stuck while holding the writer lock:
    # stores here fail within busy_timeout (503 upstream) instead of hanging.
    import fcntl
    import os
    import time as _time

    from sipsilo.silo.sqlite import SqliteSiloStore
    from sipsilo.silo.store import StoreError

    async def main() -> None:
        store = SqliteSiloStore(tmp_path / "silo.db", busy_timeout=0.3)
        await store.open()
        try:
            await store.store(msg(1))  # the lock file exists from here on
            fd = os.open(str(tmp_path / "silo.db") + "-writer", os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            started = _time.monotonic()
            try:
                await store.store(msg(2))
            except StoreError as exc:
                assert "writer lock" in str(exc)
            else:
                raise AssertionError("stored while another process held the writer lock")
            assert 0.25 < _time.monotonic() - started < 3.0
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            assert await store.store(msg(3)) > 0  # and works again once released
        finally:
            await store.close()

    asyncio.run(main())

"""Shared test helpers for the message store."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sipsilo.silo.sqlite import SqliteSiloStore
from sipsilo.silo.store import NewMessage

T = TypeVar("T")

# Kamailio 5.6.3 msilo's statements, verbatim from its debug log (reference section 2).
K_INSERT = (
    "insert into silo (username,domain,dst_addr,src_addr,body,ctype,exp_time,inc_time,"
    "snd_time,extra_hdrs ) values (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"
)
K_SELECT = (
    "select id,src_addr,dst_addr,body,ctype,inc_time,extra_hdrs from silo "
    "where username=?1 AND domain=?2 AND snd_time=?3 order by id"
)
K_VERSION = "select table_version from version where table_name=?1"
K_DELETE_ID = "delete from silo where id=?1"
K_DELETE_EXPIRED = "delete from silo where exp_time<=?1"


def msg(
    i: int = 0,
    user: str = "bob",
    domain: str = "example.com",
    *,
    inc: int = 1000,
    exp: int = 10_000,
    ctype: str = "text/plain",
    body: bytes | None = None,
    extra: str = "",
) -> NewMessage:
    return NewMessage(
        src_addr="sip:alice@example.com",
        dst_addr=f"sip:{user}@{domain}",
        username=user,
        domain=domain,
        inc_time=inc,
        exp_time=exp,
        ctype=ctype,
        body=body if body is not None else f"hello {i}\r\n".encode(),
        extra_hdrs=extra,
        callid=f"call-{i}",
    )


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async test body (pytest-asyncio is not a dependency)."""

    async def main() -> T:
        return await fn()

    return asyncio.run(main())


async def opened(path: Path | str, **kw: object) -> SqliteSiloStore:
    store = SqliteSiloStore(path, **kw)  # type: ignore[arg-type]
    await store.open()
    return store


def raw(path: Path | str) -> sqlite3.Connection:
    """A second, independent connection, as another process would have."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10, check_same_thread=False)
    return conn

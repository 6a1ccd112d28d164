"""CLI-facing admin functions and the store factory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sipsilo.admin import silo as admin
from sipsilo.config import Config, load_config
from sipsilo.db.schema import LATEST_VERSION
from sipsilo.db.url import parse_db_url
from sipsilo.silo.backend import open_store
from sipsilo.silo.sqlite import SqliteSiloStore
from sipsilo.silo.store import StoreConfigError, StoreError
from sipsilo.sip.uri import split_aor

from .helpers import msg, opened, run


def cfg(data_dir: Path, url: str = "sqlite:///silo.db", table: str = "silo") -> Config:
    return load_config(None, [f"msilo.db_url={url}", f"msilo.db_table={table}"], env={},
                       data_dir=data_dir)


def test_parse_db_url(tmp_path: Path) -> None:
    assert parse_db_url("sqlite:///a/b.db", data_dir=tmp_path).path == str(tmp_path / "a/b.db")
    assert parse_db_url("sqlite:////var/x.db", data_dir=tmp_path).path == "/var/x.db"
    assert parse_db_url("sqlite://").path == ":memory:"
    assert parse_db_url("sqlite:///:memory:").path == ":memory:"
    u = parse_db_url("sqlite:///x.db?synchronous=normal&busy_timeout=2.5", data_dir=tmp_path)
    assert (u.synchronous, u.busy_timeout) == ("NORMAL", 2.5)
    with pytest.raises(StoreConfigError, match="unsupported database URL") as ei:
        parse_db_url("oracle://kam:secret@db/kamailio")
    assert "secret" not in str(ei.value)
    with pytest.raises(StoreConfigError):
        open_store("oracle://u@h/db", "silo", None)
    with pytest.raises(StoreConfigError):
        open_store("sqlite:///x.db", "bad name", None)


def test_open_store_factory(tmp_path: Path) -> None:
    store = open_store("sqlite:///sub/m.db", "silo", str(tmp_path))
    assert isinstance(store, SqliteSiloStore)

    async def body() -> None:
        async with store:
            assert await store.store(msg()) == 1

    run(body)
    assert (tmp_path / "sub" / "m.db").exists()


@pytest.mark.parametrize(
    ("aor", "expected"),
    [
        ("sip:bob@Example.COM", ("bob", "example.com")),
        ("bob@example.com", ("bob", "example.com")),
        ("<sips:bob@example.com:5061;transport=tls>", ("bob", "example.com")),
        ("sip:bob@[2001:db8::1]:5060", ("bob", "[2001:db8::1]")),
    ],
)
def test_parse_aor(aor: str, expected: tuple[str, str]) -> None:
    assert split_aor(aor) == expected


def test_parse_aor_rejects_no_user() -> None:
    with pytest.raises(ValueError):
        split_aor("sip:example.com")


def test_admin_commands_while_server_runs(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    with pytest.raises(StoreError, match="db init"):
        admin.list_messages(c, None)
    assert admin.db_init(c) == LATEST_VERSION
    assert admin.db_init(c) == LATEST_VERSION
    assert admin.db_migrate(c) == (LATEST_VERSION, LATEST_VERSION)
    now = int(time.time())

    async def body() -> None:
        s = await opened(tmp_path / "silo.db")  # the "server"
        b1 = await s.store(msg(1, exp=now + 1000, body=b"\x00bin"))
        await s.store(msg(2, exp=now - 1))
        await s.store(msg(3, user="carol", exp=now - 1))
        await s.store(msg(4, user="carol", exp=now + 1000))
        await s.store(msg(5, user="dave", exp=now + 1000))

        rows = admin.list_messages(c, None)
        assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
        assert [r["id"] for r in admin.list_messages(c, "sip:bob@example.com")] == [1, 2]
        shown = admin.show_message(c, b1)
        assert shown is not None and shown["body"] == b"\x00bin"
        assert shown["aor"] == "bob@example.com" and shown["ctype"] == "text/plain"
        assert admin.show_message(c, 999) is None

        assert admin.delete_message(c, b1) and not admin.delete_message(c, b1)
        assert admin.purge(c, "carol@example.com", expired=True) == 1
        assert admin.purge(c, expired=True) == 1  # bob's expired one
        # The server keeps working beside the CLI and sees its changes.
        assert [m.id for m in await s.list_messages()] == [4, 5]
        assert admin.purge(c, "sip:carol@example.com") == 1
        await s.store(msg(6))
        assert admin.purge(c) == 2  # no filter: everything
        assert await s.count() == 0
        await s.close()

    run(body)


def test_admin_refuses_unmigrated_table(tmp_path: Path) -> None:
    c = cfg(tmp_path, table="other")
    admin.db_init(cfg(tmp_path))  # the file exists, but table "other" is not set up
    with pytest.raises(StoreError, match="db migrate"):
        admin.list_messages(c, None)
    assert admin.db_migrate(c) == (0, LATEST_VERSION)
    assert admin.list_messages(c, None) == []

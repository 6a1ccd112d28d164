"""The admin CLI works on the database while the server runs, and `sipsilo
stats` names each msilo counter for what it counts."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.integration.harness import ServerProcess
from tests.integration.silo_helpers import register, send_message, start_ua, stats, wait_for

MakeServer = Callable[..., ServerProcess]


def _ok(server: ServerProcess, *args: str) -> str:
    result = server.cli(*args)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def test_silo_commands_against_a_running_server(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.check_time": 1})
    send_message(server, calls=3, rate=100, body="for bob [call_number]\n")
    send_message(server, to_user="carol", body="for carol\n")
    bob = f"sip:bob@{server.uri_host}"

    listed = [json.loads(line) for line in _ok(server, "--json", "silo", "list").splitlines()]
    assert [m["aor"] for m in listed] == ["bob@127.0.0.1"] * 3 + ["carol@127.0.0.1"]
    listed_bob = [
        json.loads(line) for line in _ok(server, "--json", "silo", "list", bob).splitlines()
    ]
    assert [m["body"] for m in listed_bob] == [f"for bob {n}\r\n" for n in (1, 2, 3)]

    first = listed_bob[0]["id"]
    shown = json.loads(_ok(server, "--json", "silo", "show", str(first)))
    assert shown["src_addr"] == f"sip:alice@{server.uri_host}"
    assert shown["dst_addr"] == bob
    assert shown["body"] == "for bob 1\r\n"

    assert _ok(server, "silo", "delete", str(first)).strip() == f"deleted message {first}"
    missing = server.cli("silo", "show", str(first))
    assert missing.returncode == 1 and f"no stored message {first}" in missing.stderr

    assert _ok(server, "silo", "purge", "sip:carol@127.0.0.1").strip() == "purged 1 message"
    assert _ok(server, "silo", "purge", "--expired").strip() == "purged 0 messages"
    assert [r["body"] for r in server.rows()] == [b"for bob 2\r\n", b"for bob 3\r\n"]

    # One failed delivery, then both delivered.
    ua = start_ua(server, calls=1, code=480, reason="Temporarily Unavailable")
    register(server, ua.port)
    ua.finish(10)
    wait_for(lambda: stats(server)["msilo:failed_messages"] == 1, 5)
    ua = start_ua(server, calls=2)
    register(server, ua.port)
    ua.finish(10)
    assert [m.body.endswith(f"for bob {n}\r\n".encode()) for m, n in zip(
        ua.received(), (2, 3), strict=True)] == [True, True]
    wait_for(lambda: server.rows() == [], 5)

    counters = stats(server)
    assert counters["msilo:stored_messages"] == 4
    assert counters["msilo:dumped_messages"] == 2  # Kamailio books these as dumped_reminders
    assert counters["msilo:failed_messages"] == 1
    assert counters["msilo:expired_messages"] == 0

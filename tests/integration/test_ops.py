"""Operating a real server: /metrics read by prometheus-client's parser after real
SIP traffic, /health and /ready (503 when the database stops answering), the
admin API with its bearer token, JSON logs and SIGHUP reload."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from tests.integration.harness import ServerProcess, free_port
from tests.integration.ops_helpers import TOKEN, Forwarder, http, scrape, value
from tests.integration.silo_helpers import register, send_message, start_ua, wait_for
from tests.integration.sipwire import request, status_line, udp_exchange
from tests.integration.test_auth import add_user

MakeServer = Callable[..., ServerProcess]
HOST = "127.0.0.1"


def _with_http(make_server: MakeServer, tmp_path: Path, **settings: object) -> ServerProcess:
    data = tmp_path / f"srv{len(list(tmp_path.iterdir()))}"
    data.mkdir()
    (data / "admin.token").write_text(TOKEN + "\n")
    port = free_port()
    server = make_server(data_dir=data, **{"http.listen": f"127.0.0.1:{free_port({port})}",
                                           "http.admin_token_file": "admin.token", **settings})
    server.http_port = int(str(server.settings["http.listen"]).rsplit(":", 1)[1])  # type: ignore[attr-defined]
    return server


def _port(server: ServerProcess) -> int:
    return int(server.http_port)  # type: ignore[attr-defined]


def _store(server: ServerProcess, user: str, bodies: list[str]) -> None:
    for body in bodies:
        result, _ = send_message(server, to_user=user, body=body + "\n")
        assert result.returncode == 0, result.stdout


def test_metrics_count_the_real_traffic(make_server: MakeServer, tmp_path: Path) -> None:
    server = _with_http(make_server, tmp_path, **{"msilo.add_date": 0})
    port = _port(server)
    before = scrape(port)
    assert value(before, "sipsilo_stored_messages_total") == 0
    assert value(before, "sipsilo_workers") == 1

    result, _ = send_message(server, to_user="bob", calls=5, rate=50,
                             body="hello [call_number]\n")
    assert result.returncode == 0, result.stdout
    s = scrape(port)
    assert value(s, "sipsilo_stored_messages_total") == 5
    assert value(s, "sipsilo_sip_requests_total", method="MESSAGE") == 5
    assert value(s, "sipsilo_sip_responses_total", direction="sent", **{"class": "2xx"}) == 5
    assert value(s, "sipsilo_store_commit_seconds_count") == 5
    assert 0 < value(s, "sipsilo_store_commit_seconds_sum") < 5
    assert value(s, "sipsilo_store_commit_seconds_bucket", le="+Inf") == 5
    assert value(s, "sipsilo_silo_messages") == 5
    assert value(s, "sipsilo_silo_oldest_message_age_seconds") >= 0
    assert value(s, "sipsilo_dumped_messages_total") == 0

    time.sleep(1.1)  # the oldest row gets an age of at least a second
    ua = start_ua(server, calls=5, timeout=15)
    register(server, ua.port)
    ua.finish(20)
    assert len(ua.received()) == 5
    wait_for(lambda: value(scrape(port), "sipsilo_dumped_messages_total") == 5, 10)
    s = scrape(port)
    assert value(s, "sipsilo_sip_requests_total", method="REGISTER") == 1
    assert value(s, "sipsilo_sip_responses_total", direction="received", **{"class": "2xx"}) == 5
    assert value(s, "sipsilo_silo_wait_seconds_count") == 5
    assert value(s, "sipsilo_silo_wait_seconds_sum") >= 5 * 1.0
    assert value(s, "sipsilo_silo_wait_seconds_bucket", le="1.0") == 0
    assert value(s, "sipsilo_bindings", transport="udp") == 1
    assert value(s, "sipsilo_silo_messages") == 0
    assert value(s, "sipsilo_failed_messages_total") == 0


def test_health_and_ready(make_server: MakeServer, tmp_path: Path) -> None:
    server = _with_http(make_server, tmp_path)
    health = http(_port(server), "/health")
    assert (health.status, health.json()) == (200, {"status": "alive"})
    ready = http(_port(server), "/ready")
    assert (ready.status, ready.json()) == (200, {"ready": True, "reason": "ok"})
    assert http(_port(server), "/nothing").status == 404
    refused = http(_port(server), "/metrics", method="POST")
    assert refused.status == 405 and "error" in refused.json()


def test_ready_turns_503_when_the_database_stops_answering(
    pg_db: str, make_server: MakeServer, tmp_path: Path
) -> None:
    # A forwarder of our own in front of the shared PostgreSQL: freezing it is an
    # outage for this server only.
    parts = urlsplit(pg_db)
    forwarder = Forwarder((parts.hostname or HOST, parts.port or 5432))
    try:
        url = pg_db.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{forwarder.port}")
        url += ("&" if "?" in url else "?") + "connect_timeout=2"
        server = _with_http(make_server, tmp_path, **{"msilo.db_url": url})
        assert http(_port(server), "/ready").status == 200
        forwarder.freeze()
        reply = http(_port(server), "/ready")
        assert reply.status == 503
        assert reply.headers["content-type"] == "application/json"
        doc = reply.json()
        assert doc["ready"] is False and "database" in doc["reason"], doc
        assert http(_port(server), "/health").status == 200  # alive all the same
        # A scrape still answers, without the figures only the database has.
        samples = scrape(_port(server))
        assert value(samples, "sipsilo_stored_messages_total") == 0
        assert ("sipsilo_silo_messages", ()) not in samples
        forwarder.thaw()
        wait_for(lambda: http(_port(server), "/ready").status == 200, 15, 0.5)
        assert value(scrape(_port(server)), "sipsilo_silo_messages") == 0
    finally:
        forwarder.close()


def test_admin_api_lists_and_deletes_and_the_deleted_message_is_never_delivered(
    make_server: MakeServer, tmp_path: Path
) -> None:
    server = _with_http(make_server, tmp_path, **{"msilo.add_date": 0})
    port = _port(server)
    _store(server, "bob", ["first", "second", "third"])
    _store(server, "carol", ["for carol"])

    for token in (None, "wrong", TOKEN[:-1] + "x", TOKEN + "x"):
        reply = http(port, "/api/v1/silo", token=token)
        assert reply.status == 401, token
        assert reply.json() == {"error": "missing or wrong bearer token"}
        assert reply.headers["www-authenticate"].startswith("Bearer")
    users = http(port, "/api/v1/silo", token=TOKEN)
    assert users.status == 200
    assert [(u["aor"], u["count"]) for u in users.json()] == [
        (f"bob@{HOST}", 3), (f"carol@{HOST}", 1)]

    listed = http(port, f"/api/v1/silo/bob@{HOST}", token=TOKEN).json()
    assert [m["body"] for m in listed] == ["first\r\n", "second\r\n", "third\r\n"]
    first = listed[0]
    assert first["from"] == f"sip:alice@{server.uri_host}"
    assert first["content_type"] == "text/plain"
    assert first["size"] == len("first\r\n")
    assert first["stored"].endswith("Z") and first["expires"] > first["stored"]
    second = listed[1]["id"]

    # Not bob's message: refused, nothing deleted.
    assert http(port, f"/api/v1/silo/carol@{HOST}/{second}", "DELETE", TOKEN).status == 404
    deleted = http(port, f"/api/v1/silo/bob@{HOST}/{second}", "DELETE", TOKEN)
    assert (deleted.status, deleted.json()) == (200, {"deleted": second})
    assert http(port, f"/api/v1/silo/bob@{HOST}/{second}", "DELETE", TOKEN).status == 404
    assert http(port, f"/api/v1/silo/bob@{HOST}/{second}", "DELETE").status == 401
    bad = http(port, "/api/v1/silo/nobody", token=TOKEN)
    assert bad.status == 400 and "user@domain" in bad.json()["error"]
    purged = http(port, f"/api/v1/silo/carol@{HOST}", "DELETE", TOKEN)
    assert purged.json() == {"deleted": 1}

    ua = start_ua(server, calls=2, timeout=15)
    register(server, ua.port)
    ua.finish(20)
    assert [m.body for m in ua.received()] == [b"first\r\n", b"third\r\n"]
    wait_for(lambda: server.rows() == [], 5)
    time.sleep(0.5)
    assert [m.body for m in ua.received()] == [b"first\r\n", b"third\r\n"]

    bindings = http(port, f"/api/v1/location/bob@{HOST}", token=TOKEN).json()
    assert [b["contact"] for b in bindings] == [f"sip:bob@127.0.0.1:{ua.port}"]
    assert len(http(port, "/api/v1/location", token=TOKEN).json()) == 1
    removed = http(port, f"/api/v1/location/bob@{HOST}", "DELETE", TOKEN)
    assert removed.json() == {"removed": 1}
    assert http(port, f"/api/v1/location/bob@{HOST}", token=TOKEN).json() == []
    stats = http(port, "/api/v1/stats", token=TOKEN).json()
    assert stats["msilo:dumped_messages"] == 2 and stats["msilo:stored_messages"] == 4


def test_admin_api_is_off_without_a_token_file(make_server: MakeServer) -> None:
    port = free_port()
    server = make_server(**{"http.listen": f"127.0.0.1:{port}"})
    reply = http(port, "/api/v1/silo", token=TOKEN)
    assert reply.status == 404 and "admin_token_file" in reply.json()["error"]
    assert http(port, "/metrics").status == 200
    assert "admin API" not in server.log().split("HTTP endpoint", 1)[1].split("\n", 1)[0]


def test_json_logs_parse_line_by_line(make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server(**{"server.log_format": "json"})
    result, entries = send_message(server, to_user="bob")
    assert result.returncode == 0, result.stdout
    call_id = next(e.header("Call-ID") for e in entries if e.sent)
    server.stop()
    lines = server.log().splitlines()
    assert len(lines) > 3
    docs = [json.loads(line) for line in lines]  # each line is one JSON object
    for doc in docs:
        assert {"time", "level", "logger", "event"} <= doc.keys(), doc
    stored = [d for d in docs if d["event"].startswith("stored message")]
    assert len(stored) == 1
    assert stored[0]["call_id"] == call_id
    assert stored[0]["user"] == f"bob@{HOST}"
    assert isinstance(stored[0]["message_id"], int)
    assert {"info", "warning"} <= {d["level"] for d in docs}


def test_sighup_applies_a_new_log_level_and_names_what_needs_a_restart(
    make_server: MakeServer,
) -> None:
    server = make_server(**{"server.log_level": "info"})
    assert server.proc is not None

    def reload(**settings: object) -> None:
        server.settings.update(settings)
        (server.data_dir / "sipsilo.toml").write_text(server.config_text())
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)

    _store(server, "bob", ["before"])
    # (Info lines are written by the logging thread, a moment after the 202.)
    wait_for(lambda: server.log().count("route: stored message") == 1)
    # To warning, with a key that cannot change while running: said in one line
    # (a warning, so it shows at the new level).
    reload(**{"server.log_level": "warning", "msilo.expire_time": 60})
    wait_for(lambda: "not reloaded, restart to apply: msilo.expire_time" in server.log(), 10)
    _store(server, "bob", ["quiet"])
    # And back: info lines again. Lines are written in order: a line for "quiet"
    # would be above the reload's.
    reload(**{"server.log_level": "info"})
    wait_for(lambda: "configuration reloaded (server.log_level changed)" in server.log(), 10)
    assert server.log().count("route: stored message") == 1
    _store(server, "bob", ["after"])
    wait_for(lambda: server.log().count("route: stored message") == 2)
    assert server.proc.poll() is None  # SIGHUP did not end it


def test_sighup_with_a_broken_file_keeps_running(make_server: MakeServer) -> None:
    server = make_server()
    (server.data_dir / "sipsilo.toml").write_text("[server]\nlog_level = 5\n")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration not reloaded: server.log_level" in server.log(), 10)
    _store(server, "bob", ["still serving"])


def test_workers_one_scrape_covers_every_worker(make_server: MakeServer, tmp_path: Path) -> None:
    sip = free_port()
    server = _with_http(make_server, tmp_path, port=sip, **{
        "server.workers": 2, "server.listen": [f"udp:127.0.0.1:{sip}"]})
    port = _port(server)
    users = ["bob", "carol", "dave", "frank"]  # both workers have some (test_workers)
    for user in users:
        _store(server, user, [f"for {user}"])
    s = scrape(port)
    assert value(s, "sipsilo_workers") == 2
    assert value(s, "sipsilo_stored_messages_total") == 4
    assert value(s, "sipsilo_sip_requests_total", method="MESSAGE") == 4
    assert value(s, "sipsilo_store_commit_seconds_count") == 4
    assert value(s, "sipsilo_silo_messages") == 4  # the one table, counted once
    assert http(port, "/ready").json() == {"ready": True, "reason": "ok"}
    listed = http(port, "/api/v1/silo", token=TOKEN).json()
    assert sorted(u["aor"] for u in listed) == sorted(f"{u}@{HOST}" for u in users)
    assert http(port, "/api/v1/stats", token=TOKEN).json()["server:workers"] == 2

    ua = start_ua(server, calls=1, timeout=15)
    register(server, ua.port)  # bob: worker 0
    ua.finish(20)
    assert len(ua.received()) == 1
    assert len(http(port, f"/api/v1/location/bob@{HOST}", token=TOKEN).json()) == 1
    removed = server.cli("location", "remove", f"bob@{HOST}")  # the CLI, same command
    assert (removed.returncode, removed.stdout.split()) == (0, ["removed", "1"]), removed
    assert http(port, f"/api/v1/location/bob@{HOST}", token=TOKEN).json() == []
    assert http(port, "/api/v1/location/bob", "DELETE", TOKEN).status == 400

    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in server.log(), 10)
    assert "did not reload" not in server.log()
    _store(server, "bob", ["after reload"])
    assert value(scrape(port), "sipsilo_stored_messages_total") == 5


ROUTE = """
async def route(ctx):
    ctx.sl_send_reply(403, "@@TAG@@")
"""


def test_sighup_reloads_the_route_module_and_keeps_it_when_the_new_one_breaks(
    make_server: MakeServer, tmp_path: Path
) -> None:
    mod = tmp_path / "routes"
    mod.mkdir()
    (mod / "ops_route.py").write_text(ROUTE.replace("@@TAG@@", "version one"))
    server = make_server(
        env={"PYTHONPATH": f"{mod}:{os.environ.get('PYTHONPATH', '')}",
             "PYTHONDONTWRITEBYTECODE": "1"},
        **{"server.route": "ops_route:route"})
    assert server.proc is not None

    sent = iter(range(100))

    def answer() -> str:  # a new transaction each time
        branch = f"z9hG4bK-ops-{next(sent)}"
        reply = udp_exchange(server.port, request(server.port, branch=branch), wait=2)
        assert reply is not None
        return status_line(reply)

    assert answer() == "SIP/2.0 403 version one"
    (mod / "ops_route.py").write_text(ROUTE.replace("@@TAG@@", "version two"))
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: server.log().count("configuration reloaded") == 1, 10)
    assert answer() == "SIP/2.0 403 version two"

    (mod / "ops_route.py").write_text("async def route(ctx:\n")  # a syntax error
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: server.log().count("configuration reloaded") == 2, 10)
    assert "route not reloaded, the old one stays: server.route: cannot import ops_route" \
        in server.log()
    assert answer() == "SIP/2.0 403 version two"


def test_sighup_applies_new_authentication_settings(
    make_server: MakeServer, tmp_path: Path
) -> None:
    data = tmp_path / "auth"
    add_user(data, f"alice@{HOST}", "alicepw")
    server = make_server(data_dir=data, **{"msilo.add_date": 0})
    assert "authentication on" in server.log()
    result, _ = send_message(server, to_user="bob", expect=407)  # alice is a local user
    assert result.returncode == 0, result.stdout
    server.settings["auth.enabled"] = False
    (server.data_dir / "sipsilo.toml").write_text(server.config_text())
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded (auth.enabled changed)" in server.log(), 10)
    assert "authentication is OFF" in server.log()
    result, _ = send_message(server, to_user="bob", expect=202)
    assert result.returncode == 0, result.stdout

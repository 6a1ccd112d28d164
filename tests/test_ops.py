"""The operations glue without sockets: histograms and their merge, the Prometheus
text, JSON log lines, the admin API's token check and routes, reload's key lists,
the [http] configuration. tests/integration/test_ops.py runs all of it for real."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipsilo.config import ConfigError, load_config
from sipsilo.http.api import Api, HttpSetupError, load_token, location_key, message_view
from sipsilo.http.server import HttpRequest
from sipsilo.metrics import Counters, Histogram, merge_histograms
from sipsilo.ops.logs import JsonFormatter, flush_logging, setup_logging, stop_logging
from sipsilo.ops.prometheus import exposition
from sipsilo.ops.reload import applied_config, changed_keys, not_reloadable
from sipsilo.ops.snapshot import merge


def test_histogram_bucket_holds_values_up_to_and_including_its_bound() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.1, 0.5, 1.0, 3.0):
        h.observe(v)
    assert h.counts == [1, 2, 1]
    assert h.sum == pytest.approx(4.6)


def test_merge_adds_counts_and_takes_the_shared_table_once() -> None:
    a: dict[str, Any] = {"counters": {"stored_messages": 2}, "requests": {"MESSAGE": 2},
                         "silo_rows": 7, "bindings": {"udp": 3}, "transactions": 1,
                         "db_pool": None, "histograms": Counters().histogram_snapshot()}
    b = json.loads(json.dumps(a))
    b["counters"]["stored_messages"] = 5
    b["histograms"]["store_commit_seconds"]["counts"][0] = 4
    out = merge([a, b])
    assert out["counters"] == {"stored_messages": 7}
    assert out["requests"] == {"MESSAGE": 4}
    assert out["transactions"] == 2
    assert out["silo_rows"] == 7 and out["bindings"] == {"udp": 3}
    assert out["histograms"]["store_commit_seconds"]["counts"][0] == 4
    assert out["db_pool"] is None


def test_merge_histograms_adds_sums() -> None:
    h = Histogram((1.0,))
    h.observe(0.5)
    snap = {"x": h.snapshot()}
    merged = merge_histograms([snap, snap])
    assert merged["x"] == {"bounds": [1.0], "counts": [2, 0], "sum": 1.0}


def _parse(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text.decode()) for s in f.samples}


def test_exposition_names_and_cumulative_buckets() -> None:
    counters = Counters()
    counters.inc("stored_messages", 3)
    for v in (0.0004, 0.003, 20.0):
        counters.observe("store_commit_seconds", v)
    snap = {"counters": counters.snapshot(), "histograms": counters.histogram_snapshot(),
            "requests": {"MESSAGE": 3}, "responses_sent": {"2xx": 3},
            "db_pool": {"open": 2, "in_use": 1, "max": 10}, "bindings": {"tcp": 1},
            "db_statements": 42}
    s = _parse(exposition(snap))
    assert s[("sipsilo_stored_messages_total", ())] == 3
    assert s[("sipsilo_sip_requests_total", (("method", "MESSAGE"),))] == 3
    assert s[("sipsilo_sip_responses_total", (("class", "2xx"), ("direction", "sent")))] == 3
    assert s[("sipsilo_store_commit_seconds_bucket", (("le", "0.0005"),))] == 1
    assert s[("sipsilo_store_commit_seconds_bucket", (("le", "0.005"),))] == 2
    assert s[("sipsilo_store_commit_seconds_bucket", (("le", "10.0"),))] == 2
    assert s[("sipsilo_store_commit_seconds_bucket", (("le", "+Inf"),))] == 3
    assert s[("sipsilo_store_commit_seconds_count", ())] == 3
    assert s[("sipsilo_db_pool_connections", (("state", "in_use"),))] == 1
    assert s[("sipsilo_bindings", (("transport", "tcp"),))] == 1
    assert s[("sipsilo_db_statements_total", ())] == 42


def test_json_log_line_carries_context_and_keeps_a_traceback_on_one_line() -> None:
    record = logging.LogRecord("sipsilo.route", logging.INFO, __file__, 1,
                               "stored message %s", (5,), None)
    record.call_id = "abc@host"
    record.message_id = 5
    doc = json.loads(JsonFormatter("w1").format(record))
    assert doc["event"] == "stored message 5" and doc["level"] == "info"
    assert doc["call_id"] == "abc@host" and doc["message_id"] == 5 and doc["worker"] == "w1"
    assert doc["time"].endswith("Z") and "user" not in doc
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line and "boom" in json.loads(line)["exc"]


def test_setup_logging_replaces_its_own_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        buf = io.StringIO()
        monkeypatch.setattr("sys.stderr", buf)
        setup_logging("info", "text")
        setup_logging("warning", "json")
        ours = [h for h in root.handlers if getattr(h, "_sipsilo_handler", False)]
        assert len(ours) == 1 and root.level == logging.WARNING
        logging.getLogger("sipsilo.t").warning("hello")  # a warning is written at once
        assert json.loads(buf.getvalue().splitlines()[-1])["event"] == "hello"
        logging.getLogger("sipsilo.t").info("not at warning")
        logging.getLogger("sipsilo.t").error("last words")
        stop_logging()  # what is queued is written, not dropped
        assert json.loads(buf.getvalue().splitlines()[-1])["event"] == "last words"
        assert "not at warning" not in buf.getvalue()
        assert not [h for h in root.handlers if getattr(h, "_sipsilo_handler", False)]
    finally:
        stop_logging()
        root.setLevel(saved[0])


def test_a_burst_of_lines_is_written_whole_and_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.level
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    try:
        setup_logging("info", "text", "w2")
        log = logging.getLogger("sipsilo.route")
        for i in range(5000):
            log.info("stored message %d", i)
        flush_logging()
        lines = buf.getvalue().splitlines()
        assert [int(line.rsplit(" ", 1)[1]) for line in lines] == list(range(5000))
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO w2 sipsilo.route: "
                            r"stored message 0", lines[0]), lines[0]
    finally:
        stop_logging()
        root.setLevel(saved)


class _Backend:
    def __init__(self, config: Any) -> None:
        self.config = config

    async def metrics(self) -> dict[str, Any]:
        return {}

    async def ready(self) -> dict[str, Any]:
        return {"ready": False, "reason": "database did not answer within 2 s"}

    async def control(self, message: dict[str, Any]) -> Any:
        return {"cmd": message["cmd"]}


def _call(api: Api, method: str, path: str, auth: str | None = None) -> tuple[int, Any]:
    headers = {} if auth is None else {"authorization": auth}
    reply = asyncio.run(api.handle(HttpRequest(method, path, headers)))
    return reply.status, (json.loads(reply.body) if reply.content_type.startswith(
        "application/json") else reply.body)


def test_api_token_check_and_routes(tmp_path: Path) -> None:
    api = Api(_Backend(load_config(None, [], env={}, data_dir=tmp_path)),
              "0123456789abcdef")
    for auth in (None, "Bearer wrong", "Basic 0123456789abcdef", "Bearer 0123456789abcdeF"):
        assert _call(api, "GET", "/api/v1/stats", auth)[0] == 401
    good = "Bearer 0123456789abcdef"
    assert _call(api, "GET", "/api/v1/stats", good) == (200, {"cmd": "stats"})
    assert _call(api, "POST", "/api/v1/stats", good)[0] == 405
    assert _call(api, "GET", "/api/v1/nothing", good)[0] == 404
    assert _call(api, "GET", "/ready") == (503, {"ready": False, "reason":
                                                 "database did not answer within 2 s"})
    assert _call(api, "DELETE", "/health")[0] == 405
    status, doc = _call(api, "DELETE", "/api/v1/silo/bob@example.com/x", good)
    assert status == 400 and "message id" in doc["error"]
    off = Api(api.backend, None)
    assert _call(off, "GET", "/api/v1/stats", good)[0] == 404


def test_location_key_accepts_user_at_domain_or_a_sip_uri() -> None:
    assert location_key("bob@Example.com") == location_key("sip:bob@example.com:5060")
    with pytest.raises(ValueError, match="user@domain"):
        location_key("example.com")


def test_message_view_shows_text_bodies_and_sizes() -> None:
    row = {"id": 1, "aor": "bob@x", "src_addr": "sip:a@x", "dst_addr": "sip:bob@x",
           "ctype": "application/octet-stream", "body": b"\xff\x00", "inc_time": 0,
           "exp_time": 60, "callid": ""}
    view = message_view(row)
    assert view["body"] is None and view["size"] == 2 and view["call_id"] is None
    assert view["stored"] == "1970-01-01T00:00:00Z"


def test_token_file_errors_name_the_key(tmp_path: Path) -> None:
    def config(name: str) -> Any:
        return load_config(None, [f"http.admin_token_file={name}"], env={}, data_dir=tmp_path)

    with pytest.raises(HttpSetupError, match=r"^http.admin_token_file: cannot read"):
        load_token(config("missing"))
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(HttpSetupError, match="at least 16"):
        load_token(config("short"))
    (tmp_path / "good").write_text("  0123456789abcdef0123\n")
    assert load_token(config("good")) == "0123456789abcdef0123"
    assert load_token(load_config(None, [], env={})) is None


def test_http_listen_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"^config error: http.listen: expected \"host:port\""):
        load_config(None, ["http.listen=127.0.0.1"], env={})
    with pytest.raises(ConfigError, match=r"server\.log_format"):
        load_config(None, ["server.log_format=xml"], env={})
    assert load_config(None, ["http.listen=[::1]:9060"], env={}).http.address() == ("::1", 9060)


def test_reload_applies_only_the_reloadable_keys() -> None:
    old = load_config(None, [], env={})
    new = load_config(None, ["server.log_level=debug", "auth.max_failures=3",
                             "msilo.expire_time=60", "server.workers=2",
                             "server.listen=udp:127.0.0.1:5060"], env={})
    keys = changed_keys(old, new)
    assert not_reloadable(keys) == ["msilo.expire_time", "server.listen", "server.workers"]
    applied = applied_config(old, new)
    assert applied.server.log_level == "debug" and applied.auth.max_failures == 3
    assert applied.msilo.expire_time == old.msilo.expire_time
    assert applied.server.workers == 1


def test_openapi_document_describes_exactly_the_served_routes() -> None:
    import yaml

    from sipsilo.http.api import API_ROUTES

    doc = yaml.safe_load((Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml")
                         .read_text())
    try:
        from openapi_spec_validator import validate
    except ImportError:
        pass
    else:
        validate(doc)
    described = {(m.upper(), path) for path, item in doc["paths"].items()
                 for m in item if m in ("get", "delete", "post", "put")}
    tails = {1: "", 2: "/{aor}", 3: "/{aor}/{id}"}
    served = {(m, f"/api/v1/{section}{tails[n]}") for m, section, n in API_ROUTES}
    served |= {("GET", p) for p in ("/metrics", "/health", "/ready")}
    assert described == served

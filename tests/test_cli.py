"""The sipsilo command line as a user sees it: output, one-line errors, exit codes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from sipsilo import __version__
from sipsilo.cli import config_options, main
from sipsilo.config import Config, load_config
from sipsilo.sip import compiled

GOOD = """
[server]
listen = ["udp:127.0.0.1:5070", "tcp:[::1]:5070"]
log_level = "debug"

[msilo]
db_url = "sqlite:///silo.db"
registrar = "sip:registrar@example.com"
expire_time = 3600

[tm]
fr_timer = 4
"""


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    # Keep the caller's SIPSILO_* variables out of the tests.
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SIPSILO_")}
    runner = CliRunner()
    return runner.invoke(main, list(args), env={**clean, **(env or {})})


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    return path


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    # and which SIP core runs: the sources, unless the tests run against a compiled build
    core = "compiled core" if compiled() else "pure-Python core"
    assert result.stdout.strip() == f"sipsilo {__version__} ({core})"


def test_check_config_prints_effective_toml_that_reloads(good: Path, tmp_path: Path) -> None:
    result = invoke("check-config", str(good), "--set", "msilo.max_messages=5",
                    "--data-dir", str(tmp_path), env={"SIPSILO_TM__WT_TIMER": "3"})
    assert result.exit_code == 0, result.output
    parsed = tomllib.loads(result.stdout)
    assert parsed["server"]["listen"] == ["udp:127.0.0.1:5070", "tcp:[::1]:5070"]
    assert parsed["msilo"]["max_messages"] == 5
    assert parsed["msilo"]["expire_time"] == 3600
    assert parsed["tm"] == {"fr_timer": 4.0, "fr_inv_timer": 15.0, "wt_timer": 3.0}
    assert parsed["control"]["socket"] == "sipsilo.ctl"
    dumped = tmp_path / "dumped.toml"
    dumped.write_text(result.stdout)
    expected = load_config(str(good), ["msilo.max_messages=5"], env={"SIPSILO_TM__WT_TIMER": "3"},
                           data_dir=str(tmp_path))
    assert load_config(str(dumped), env={}, data_dir=str(tmp_path)).model_dump() == (
        expected.model_dump())


@pytest.mark.parametrize(
    ("toml", "sets", "needle"),
    [
        ("[tm]\nfr_timerr = 3\n", [], "sipsilo: error: unknown key tm.fr_timerr"),
        ('[msilo]\nexpire_time = "abc"\n', [],
         'sipsilo: error: msilo.expire_time: Input should be a valid integer (got "abc")'),
        ('[msilo]\ndb_url = "foo://bar"\n', [], "sipsilo: error: msilo.db_url: "),
        ('[server]\nlisten = ["udp:1.2.3:5060"]\n', [],
         'sipsilo: error: server.listen[0]: bad listen address "udp:1.2.3:5060"'),
        ("", ["msilo.check_time=often"], "sipsilo: error: msilo.check_time: "),
        ("[msilo\n", [], "invalid TOML"),
    ],
)
def test_check_config_errors_exit_2_with_one_line(
    tmp_path: Path, toml: str, sets: list[str], needle: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    args = ["check-config", str(path)]
    for item in sets:
        args += ["--set", item]
    result = invoke(*args)
    assert result.exit_code == 2
    assert needle in one_error_line(result)


def test_check_config_missing_file() -> None:
    result = invoke("check-config", "/nonexistent/sipsilo.toml")
    assert result.exit_code == 2
    assert one_error_line(result).startswith("sipsilo: error: cannot read /nonexistent/")


def test_check_db_pings_the_shared_redis_and_names_its_key(good: Path, tmp_path: Path) -> None:
    """--check-db reaches every configured server, Redis ([cluster] redis_url) too:
    the machine's own Redis on 6379 answers; a port nothing listens on is one line."""
    base = ("check-config", str(good), "--check-db", "--data-dir", str(tmp_path))
    up = invoke(*base, "--set", "cluster.redis_url=redis://127.0.0.1:6379/0")
    assert up.exit_code == 0, up.output
    assert "cluster.redis_url: connected to redis://127.0.0.1:6379/0" in up.stderr
    with socket.socket() as s:  # a free port: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"redis://:secret@127.0.0.1:{s.getsockname()[1]}/0"
        down = invoke(*base, "--set", f"cluster.redis_url={url}")
    assert down.exit_code == 1
    line = down.stderr.strip().splitlines()[-1]
    assert line.startswith("sipsilo: error: cluster.redis_url: cannot connect to redis://")
    assert "secret" not in down.stderr and "Traceback" not in down.output


def test_set_beats_env_beats_file(good: Path) -> None:
    env = {"SIPSILO_MSILO__EXPIRE_TIME": "60", "SIPSILO_MSILO__CHECK_TIME": "9"}
    result = invoke("check-config", str(good), "--set", "msilo.expire_time=120", env=env)
    assert result.exit_code == 0, result.output
    msilo = tomllib.loads(result.stdout)["msilo"]
    assert (msilo["expire_time"], msilo["check_time"], msilo["clean_period"]) == (120, 9, 5)


def test_set_parses_ipv6_listen(good: Path) -> None:
    result = invoke("check-config", str(good), "--set", 'server.listen=["udp:[::1]:5070"]')
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.stdout)["server"]["listen"] == ["udp:[::1]:5070"]


def test_env_error_exits_2() -> None:
    result = invoke("serve", env={"SIPSILO_MSILO__EXPIRE_TIME": "abc"})
    assert result.exit_code == 2
    assert one_error_line(result) == (
        'sipsilo: error: msilo.expire_time: Input should be a valid integer (got "abc")')


def test_usage_errors_are_one_line() -> None:
    result = invoke("serve", "--no-such-option")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert line.startswith("sipsilo: error: ") and "--no-such-option" in line
    result = invoke("silo", "show", "not-a-number")
    assert result.exit_code == 2
    assert "ID" in one_error_line(result)


def test_serve_calls_app_run_with_the_config(
    monkeypatch: pytest.MonkeyPatch, good: Path, tmp_path: Path
) -> None:
    seen: list[Config] = []
    fake = types.ModuleType("sipsilo.app")
    fake.run = seen.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipsilo.app", fake)
    data_dir = tmp_path / "data"
    result = invoke("serve", "--config", str(good), "--set", "server.workers=2",
                    "--set", "server.listen=udp:127.0.0.1:5060", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    [config] = seen
    assert config.server.workers == 2
    assert config.msilo.registrar == "sip:registrar@example.com"
    assert config.silo_db_path() == str(data_dir / "silo.db")
    assert data_dir.is_dir()  # serve creates the data dir


def test_serve_reports_os_errors_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(config: Config) -> None:
        raise OSError(98, "Address already in use")

    fake = types.ModuleType("sipsilo.app")
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipsilo.app", fake)
    result = invoke("serve")
    assert result.exit_code == 1
    assert "Address already in use" in one_error_line(result)


def test_missing_module_is_a_clear_runtime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail as if the module did not exist.
    monkeypatch.setitem(sys.modules, "sipsilo.app", None)
    monkeypatch.setitem(sys.modules, "sipsilo.control.client", None)
    for args in (["serve"], ["stats"], ["location", "list"]):
        result = invoke(*args)
        assert result.exit_code == 1
        assert one_error_line(result) == (
            "sipsilo: error: "
            + ("sipsilo.app" if args == ["serve"] else "sipsilo.control.client")
            + " is not available in this build of sipsilo")


class FakeStoreError(Exception):
    """Stands for sipsilo's own exception classes (StoreError and friends)."""


FakeStoreError.__module__ = "sipsilo.silo.store"


def _fake_admin(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """A stand-in for sipsilo.admin.silo with the return types of the real one."""
    calls: list[tuple[str, Any]] = []
    admin = types.ModuleType("sipsilo.admin.silo")

    def list_messages(config: Config, aor: str | None) -> list[dict[str, Any]]:
        calls.append(("list", aor))
        if aor == "sip:nodb@example.com":
            raise FakeStoreError("no message database at /x.db; run 'sipsilo db init'")
        if aor == "sip:bug@example.com":
            raise TypeError("unsupported operand")
        return [{"id": 1, "body": b"hi"}, {"id": 2, "body": b"there"}]

    async def show_message(config: Config, message_id: int) -> dict[str, Any] | None:
        calls.append(("show", message_id))
        return None if message_id == 404 else {"id": message_id}

    def delete_message(config: Config, message_id: int) -> bool:
        calls.append(("delete", message_id))
        return message_id != 404

    def purge(config: Config, aor: str | None = None, expired: bool = False) -> int:
        calls.append(("purge", (aor, expired)))
        return 3

    def db_init(config: Config) -> int:
        calls.append(("db_init", config.msilo.db_table))
        return 8

    for func in (list_messages, show_message, delete_message, purge, db_init):
        setattr(admin, func.__name__, func)
    monkeypatch.setitem(sys.modules, "sipsilo.admin.silo", admin)
    return calls


def test_results_print_as_a_table_or_aligned_lines_for_people(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_admin(monkeypatch)
    lines = invoke("silo", "list", "sip:bob@example.com").stdout.splitlines()
    assert lines[0].split()[:2] == ["id", "for"]
    assert lines[1].split()[0] == "1" and lines[1].endswith("hi")
    assert lines[2].split()[0] == "2" and lines[2].endswith("there")
    assert invoke("silo", "show", "7").stdout.strip() == "id  7"


def test_silo_commands_call_the_admin_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_admin(monkeypatch)
    result = invoke("--json", "silo", "list", "sip:bob@example.com")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ['{"id": 1, "body": "hi"}', '{"id": 2, "body": "there"}']
    assert invoke("--json", "silo", "show", "7").stdout.strip() == '{"id": 7}'  # async
    result = invoke("silo", "show", "404")
    assert result.exit_code == 1
    assert one_error_line(result) == "sipsilo: error: no stored message 404"
    assert invoke("silo", "delete", "5").stdout.strip() == "deleted message 5"
    result = invoke("silo", "delete", "404")
    assert (result.exit_code, one_error_line(result)) == (
        1, "sipsilo: error: no stored message 404")
    assert invoke("silo", "purge", "--expired").stdout.strip() == "purged 3 messages"
    assert invoke("silo", "purge", "sip:bob@example.com").exit_code == 0
    assert invoke("silo", "purge", "--all").exit_code == 0
    result = invoke("db", "init", "--set", "msilo.db_table=messages")
    assert result.stdout.strip() == "message store ready, schema version 8"
    assert calls == [("list", "sip:bob@example.com"), ("show", 7), ("show", 404),
                     ("delete", 5), ("delete", 404),
                     ("purge", (None, True)), ("purge", ("sip:bob@example.com", False)),
                     ("purge", (None, False)), ("db_init", "messages")]


def test_callee_exceptions_become_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_admin(monkeypatch)
    result = invoke("silo", "list", "sip:nodb@example.com")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "sipsilo: error: no message database at /x.db; run 'sipsilo db init'")
    result = invoke("silo", "list", "sip:bug@example.com")
    assert result.exit_code == 1
    assert one_error_line(result).startswith(
        "sipsilo: error: internal error: TypeError: unsupported operand")
    # the traceback is there for whoever asks for it
    result = invoke("silo", "list", "sip:bug@example.com", env={"SIPSILO_DEBUG": "1"})
    assert isinstance(result.exception, TypeError)


def test_purge_needs_exactly_one_target(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_admin(monkeypatch)
    for args in ([], ["--expired", "--all"], ["sip:a@b", "--expired"]):
        result = invoke("silo", "purge", *args)
        assert result.exit_code == 2
        assert "give exactly one of AOR, --expired or --all" in one_error_line(result)
    assert calls == []


def test_control_commands_send_the_documented_requests(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent: list[dict[str, Any]] = []
    client = types.ModuleType("sipsilo.control.client")

    def request(config: Config, message: dict[str, Any]) -> Any:
        if config.control_socket_path() != tmp_path / "sipsilo.ctl":
            raise FileNotFoundError(2, "No such file or directory")
        sent.append(message)
        return {"ok": True}

    client.request = request  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipsilo.control.client", client)
    dd = ["--data-dir", str(tmp_path)]
    assert invoke("--json", "location", "list", "sip:alice@example.com", *dd).stdout.strip() == (
        '{"ok": true}')
    assert invoke("location", "list", *dd).exit_code == 0
    assert invoke("stats", *dd).exit_code == 0
    assert sent == [{"cmd": "location.list", "aor": "sip:alice@example.com"},
                    {"cmd": "location.list", "aor": None}, {"cmd": "stats"}]
    result = invoke("stats")  # another data dir: nothing is listening there
    assert result.exit_code == 1
    assert one_error_line(result).startswith("sipsilo: error: cannot reach the running server")


def test_empty_results_say_so_in_words_and_as_an_empty_json_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = types.ModuleType("sipsilo.admin.silo")
    admin.list_messages = lambda config, aor: []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipsilo.admin.silo", admin)
    client = types.ModuleType("sipsilo.control.client")
    client.request = lambda config, message: []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipsilo.control.client", client)
    auth = types.ModuleType("sipsilo.admin.users")
    auth.user_list = lambda config: []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipsilo.admin.users", auth)
    expected = {
        ("silo", "list"): "no messages waiting",
        ("silo", "list", "sip:bob@example.com"): "no messages waiting for sip:bob@example.com",
        ("location", "list"): "no registrations",
        ("location", "list", "sip:bob@example.com"): "no registrations for sip:bob@example.com",
        ("user", "list"): "no users",
    }
    for args, text in expected.items():
        result = invoke(*args)
        assert (result.exit_code, result.stdout) == (0, text + "\n"), args
        result = invoke("--json", *args)
        assert (result.exit_code, result.stdout) == (0, "[]\n"), args


def test_every_error_has_the_same_prefix(monkeypatch: pytest.MonkeyPatch, good: Path) -> None:
    _fake_admin(monkeypatch)
    lines = [
        one_error_line(invoke("check-config", str(good), "--set", "tm.fr_timerr=1")),  # config
        one_error_line(invoke("silo", "purge")),  # usage
        one_error_line(invoke("silo", "show", "404")),  # runtime
        one_error_line(invoke("send", "--from", "alice", "--to", "bob@example.com", "hi")),
    ]
    assert lines == [
        "sipsilo: error: unknown key tm.fr_timerr (from --set tm.fr_timerr);"
        " did you mean tm.fr_timer?",
        "sipsilo: error: give exactly one of AOR, --expired or --all"
        " (see 'sipsilo silo purge --help')",
        "sipsilo: error: no stored message 404",
        "sipsilo: error: --from: 'alice' has no user part (expected user@host)"
        " (see 'sipsilo send --help')",
    ]


def test_config_options_decorator_is_reusable() -> None:
    @click.command()
    @config_options
    def show(config: Config) -> None:
        click.echo(config.msilo.expire_time)

    result = CliRunner().invoke(show, ["--set", "msilo.expire_time=77"], env={})
    assert result.exit_code == 0 and result.stdout.strip() == "77"


# --- the installed console script -------------------------------------------------

SCRIPT = shutil.which("sipsilo")


@pytest.mark.skipif(SCRIPT is None, reason="sipsilo console script not installed")
def test_installed_script_check_config_round_trip(good: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSILO_")}
    proc = subprocess.run(
        [SCRIPT or "sipsilo", "check-config", str(good), "--set",
         'server.listen=["udp:[::1]:5070"]'],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    dumped = tmp_path / "dumped.toml"
    dumped.write_text(proc.stdout)
    reloaded = load_config(str(dumped), env={}, data_dir=str(tmp_path))
    expected = load_config(str(good), ['server.listen=["udp:[::1]:5070"]'], env={},
                           data_dir=str(tmp_path))
    assert reloaded.model_dump() == expected.model_dump()
    assert reloaded.server.listen[0].host == "::1"


@pytest.mark.skipif(SCRIPT is None, reason="sipsilo console script not installed")
def test_installed_script_config_error_has_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[tm]\nfr_timerr = 3\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSILO_")}
    proc = subprocess.run([SCRIPT or "sipsilo", "check-config", str(bad)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"sipsilo: error: unknown key tm.fr_timerr (in {bad}); did you mean tm.fr_timer?\n")

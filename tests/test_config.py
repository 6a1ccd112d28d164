"""Configuration loading: defaults, layers, validation messages, TOML round trip."""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path

import pytest

from sipsilo import __version__
from sipsilo.config import (
    AUTO_WORKERS_MAX,
    Config,
    ConfigError,
    ListenAddress,
    load_config,
    sqlite_path,
)
from sipsilo.config_values import parse_cli_value


def load(*sets: str, env: dict[str, str] | None = None, **kw: object) -> Config:
    return load_config(None, list(sets), env=env or {}, **kw)  # type: ignore[arg-type]


def error_of(*sets: str, env: dict[str, str] | None = None, path: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, list(sets), env=env or {})
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith("config error: ")
    assert info.value.line == line
    return line


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sipsilo.toml"
    path.write_text(text)
    return str(path)


# --- defaults -------------------------------------------------------------------


def test_workers_auto_is_the_usable_cpus_capped() -> None:
    cpus = len(os.sched_getaffinity(0))
    for value in ("auto", "AUTO", '"auto"'):
        c = load_config(None, [f"server.workers={value}"], env={})
        assert c.server.workers == max(1, min(cpus, AUTO_WORKERS_MAX))
    assert load_config(None, [], env={"SIPSILO_SERVER__WORKERS": "auto"}).server.workers \
        == max(1, min(cpus, AUTO_WORKERS_MAX))


def test_defaults_follow_the_seed_and_kamailio() -> None:
    c = load()
    assert [str(a) for a in c.server.listen] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert c.server.domains == []
    assert c.server.log_level == "info"
    assert c.server.workers == 1
    assert c.server.route is None
    assert c.server.max_message_size == 131072
    assert c.registrar.max_contacts == 16
    assert c.server.user_agent == f"sipsilo/{__version__}"
    m = c.msilo
    assert (m.db_url, m.db_table, m.registrar) == ("sqlite:///sipsilo.db", "silo", None)
    assert (m.expire_time, m.check_time, m.clean_period, m.use_contact) == (259200, 30, 5, 1)
    assert (m.add_date, m.max_body) == (1, 65536)
    # Storage limits on by default (issue 11), unlike Kamailio's max_messages = 0.
    assert (m.max_messages, m.max_sender_messages, m.max_rows) == (10000, 500_000, 2_000_000)
    assert (m.foreign_store_rate, m.foreign_store_burst) == (20.0, 100)
    assert (m.outbound_proxy, m.notify_offline, m.claim_ttl) == (None, True, 60)
    assert (m.db_pool_min, m.db_pool_max) == (1, 10)
    r = c.registrar
    assert (r.default_expires, r.min_expires, r.max_expires, r.db_url) == (3600, 60, 86400, None)
    assert (c.tm.fr_timer, c.tm.fr_inv_timer, c.tm.wt_timer) == (10, 15, 10)
    assert c.proxy.relay_foreign is False
    assert c.control.socket == "sipsilo.ctl"


def test_effective_domains_derive_from_listen_plus_localhost() -> None:
    c = load('server.listen=["udp:192.0.2.7:5060", "tcp:192.0.2.7:5060", "udp:[::1]:5070"]')
    assert c.server.effective_domains() == ["192.0.2.7", "::1", "localhost"]
    # explicit domains replace the derived ones and are normalised
    c = load("server.domains=['Example.COM', '[2001:DB8::1]']")
    assert c.server.effective_domains() == ["example.com", "2001:db8::1"]
    # a wildcard listen vouches for loopback only
    assert load('server.listen=["udp:0.0.0.0:5060"]').server.effective_domains() == [
        "127.0.0.1", "localhost"]


def test_paths_resolve_against_the_data_dir(tmp_path: Path) -> None:
    c = load(data_dir=str(tmp_path))
    assert c.data_dir == tmp_path
    assert c.silo_db_path() == str(tmp_path / "sipsilo.db")
    assert c.control_socket_path() == tmp_path / "sipsilo.ctl"
    assert c.registrar_db_path() == ":memory:"
    c = load("msilo.db_url=sqlite:////var/lib/x.db", "registrar.db_url=sqlite:///loc.db",
             data_dir=str(tmp_path))
    assert c.silo_db_path() == "/var/lib/x.db"
    assert c.registrar_db_path() == str(tmp_path / "loc.db")


def test_sqlite_path_helper(tmp_path: Path) -> None:
    assert sqlite_path("sqlite:///a/b.db", tmp_path) == str(tmp_path / "a/b.db")
    assert sqlite_path("sqlite:////abs/b.db", tmp_path) == "/abs/b.db"
    assert sqlite_path("sqlite://") == ":memory:"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"
    assert sqlite_path("sqlite:///x.db") == str(Path.cwd() / "x.db")
    assert sqlite_path("mysql://u:p@h/db", tmp_path) is None


# --- layers ---------------------------------------------------------------------


def test_precedence_defaults_file_env_set(tmp_path: Path) -> None:
    path = write(tmp_path, "[msilo]\nexpire_time = 100\ncheck_time = 7\nclean_period = 9\n")
    env = {"SIPSILO_MSILO__EXPIRE_TIME": "200", "SIPSILO_MSILO__CHECK_TIME": "8"}
    c = load_config(path, ["msilo.expire_time=300"], env=env)
    assert c.msilo.expire_time == 300  # --set beats env and file
    assert c.msilo.check_time == 8  # env beats file
    assert c.msilo.clean_period == 9  # file beats default
    assert c.msilo.max_messages == 10000  # default
    # a later layer replaces single keys, not whole sections
    assert load_config(path, ["msilo.max_body=10"], env={}).msilo.expire_time == 100


def test_environment_values_are_parsed_as_toml() -> None:
    c = load(env={
        "SIPSILO_MSILO__EXPIRE_TIME": "60",
        "SIPSILO_PROXY__RELAY_FOREIGN": "true",
        "SIPSILO_SERVER__LISTEN": '["udp:[::1]:5070"]',
        "SIPSILO_MSILO__REGISTRAR": "sip:registrar@example.com",
        "SIPSILO_TM__FR_TIMER": "2.5",
        "SIPSILO_DATA_DIR": "/ignored",  # not SECTION__KEY: not a config key
        "HOME": "/root",
    })
    assert c.msilo.expire_time == 60
    assert c.proxy.relay_foreign is True
    assert c.server.listen == [ListenAddress("udp", "::1", 5070)]
    assert c.msilo.registrar == "sip:registrar@example.com"
    assert c.tm.fr_timer == 2.5


def test_env_is_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPSILO_MSILO__CLAIM_TTL", "42")
    assert load_config(None).msilo.claim_ttl == 42


def test_set_parses_ipv6_listen_and_lone_string() -> None:
    listen = load('server.listen=["udp:[::1]:5070"]').server.listen
    assert listen == [ListenAddress("udp", "::1", 5070)]
    assert listen[0].family == socket.AF_INET6
    assert str(listen[0]) == "udp:[::1]:5070"
    lone = load("server.listen=tcp:127.0.0.1:5080").server.listen
    assert lone == [ListenAddress("tcp", "127.0.0.1", 5080)]
    assert lone[0].family == socket.AF_INET


def test_empty_string_unsets_an_optional_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[msilo]\nregistrar = "sip:reg@example.com"\n')
    assert load_config(path, env={}).msilo.registrar == "sip:reg@example.com"
    assert load_config(path, ["msilo.registrar="], env={}).msilo.registrar is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("60", 60), ("true", True), ("2.5", 2.5), ('["a", "b"]', ["a", "b"]), ('"q"', "q"),
     ("debug", "debug"), ("sip:a@b", "sip:a@b"), ("1.2.3", "1.2.3"),
     ("2024-01-01", "2024-01-01"), ("", "")],
)
def test_cli_value_parsing(text: str, value: object) -> None:
    assert parse_cli_value(text) == value
    assert type(parse_cli_value(text)) is type(value)


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["msilo.expire_time=abc"],
         'config error: msilo.expire_time: Input should be a valid integer (got "abc")'),
        (["tm.fr_timerr=1"], "config error: unknown key tm.fr_timerr"),
        (["nosuch.key=1"], "config error: unknown key nosuch"),
        (['server.listen=["udp:1.2.3:5060"]'],
         'config error: server.listen[0]: bad listen address "udp:1.2.3:5060"'),
        (['server.listen=["udp:127.0.0.1:5060", "sctp:127.0.0.1:5060"]'],
         'config error: server.listen[1]: bad listen address "sctp:127.0.0.1:5060"'),
        (['server.listen=["udp:::1:5060"]'], "config error: server.listen[0]: bad listen"),
        (['server.listen=["udp:127.0.0.1:70000"]'], "config error: server.listen[0]: bad listen"),
        (["msilo.db_url=oracle://h/db"], 'config error: msilo.db_url: unsupported database URL'),
        (["msilo.db_url=postgres://h"], "config error: msilo.db_url: missing database name"),
        (["msilo.db_url=sqlite:///"], "config error: msilo.db_url: bad sqlite URL"),
        (["registrar.db_url=ftp://x"], "config error: registrar.db_url: unsupported database"),
        (["msilo.registrar=registrar@example.com"], "config error: msilo.registrar: not a SIP"),
        (["msilo.outbound_proxy=sip:proxy:99999"], "config error: msilo.outbound_proxy: not a"),
        (["msilo.expire_time=0"], "config error: msilo.expire_time: Input should be greater"),
        (["msilo.use_contact=2"], "config error: msilo.use_contact:"),
        (["msilo.notify_offline=yes"], "config error: msilo.notify_offline: Input should be a"),
        (["msilo.db_table=silo;drop"], "config error: msilo.db_table: not a valid table name"),
        (["server.workers=0"], "config error: server.workers:"),
        (["server.workers=1.5"], "config error: server.workers: Input should be a valid integer"),
        (["server.workers=many"], "config error: server.workers: Input should be a valid integer"),
        (["server.log_level=loud"], "config error: server.log_level:"),
        (["server.route=nocolon"], 'config error: server.route: expected "module:function"'),
        (["server.domains=['bad host']"], "config error: server.domains[0]: bad host"),
        (["tm.wt_timer=0"], "config error: tm.wt_timer: Input should be greater than 0"),
        (["tm.fr_timer=fast"], 'config error: tm.fr_timer: Input should be a valid number'),
        (["registrar.default_expires=30"], "config error: registrar.default_expires: must be"),
        (["registrar.min_expires=90000"], "config error: registrar.min_expires: must not"),
        (["msilo.db_pool_min=11"], "config error: msilo.db_pool_min: must not exceed"),
        (["msilo.db_pool_max=0"], "config error: msilo.db_pool_max: Input should be greater"),
        (["msilo.db_pool_min=-1"], "config error: msilo.db_pool_min: Input should be greater"),
        (["msilo.db_pool_max=many"], "config error: msilo.db_pool_max: Input should be a valid"),
        (["badset"], "config error: --set \"badset\": expected section.key=value"),
    ],
)
def test_errors_are_one_line_naming_the_key(sets: list[str], expected: str) -> None:
    assert error_of(*sets).startswith(expected)


def test_database_password_is_masked_in_errors() -> None:
    line = error_of("msilo.db_url=mysql://user:s3cret@host:0x/db")
    assert "s3cret" not in line and "msilo.db_url" in line


def test_database_urls_accepted() -> None:
    for url in ["sqlite:///rel/x.db", "sqlite:////abs/x.db", "sqlite://", "sqlite:///:memory:",
                "mysql://user:pass@127.0.0.1/msilo", "mysql+asyncmy://u:p@db:3306/msilo",
                "postgres://u@h/db", "postgresql://u:p@[::1]:5432/db"]:
        assert load(f"msilo.db_url={url}").msilo.db_url == url


def test_database_pool_sizes() -> None:
    m = load("msilo.db_pool_min=0", "msilo.db_pool_max=3").msilo
    assert (m.db_pool_min, m.db_pool_max) == (0, 3)
    m = load("msilo.db_pool_min=20", "msilo.db_pool_max=20").msilo
    assert (m.db_pool_min, m.db_pool_max) == (20, 20)
    assert "db_pool_min = 20" in load("msilo.db_pool_min=20", "msilo.db_pool_max=20").dump_toml()


def test_env_errors_name_the_key() -> None:
    assert error_of(env={"SIPSILO_MSILO__EXPIRE_TIME": "soon"}) == (
        'config error: msilo.expire_time: Input should be a valid integer (got "soon")')
    assert error_of(env={"SIPSILO_TM__NOPE": "1"}) == (
        "config error: unknown key tm.nope (from environment variable SIPSILO_TM__NOPE)")


def test_unknown_keys_say_where_they_came_from_and_the_nearest_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[tm]\nfr_timerr = 3\n")
    assert error_of(path=path) == (
        f"config error: unknown key tm.fr_timerr (in {path}); did you mean tm.fr_timer?")
    assert error_of(env={"SIPSILO_MSILO__EXPIRE_TIM": "1"}) == (
        "config error: unknown key msilo.expire_tim (from environment variable"
        " SIPSILO_MSILO__EXPIRE_TIM); did you mean msilo.expire_time?")
    assert error_of("msillo.expire_time=1") == (
        "config error: unknown key msillo.expire_time (from --set msillo.expire_time);"
        " did you mean msilo.expire_time?")
    # the right key in the wrong section
    assert error_of("msilo.fr_timer=3") == (
        "config error: unknown key msilo.fr_timer (from --set msilo.fr_timer);"
        " did you mean tm.fr_timer?")
    # the last layer that gave the key is named
    assert error_of("tm.fr_timerr=1", path=path).startswith(
        "config error: unknown key tm.fr_timerr (from --set tm.fr_timerr)")
    assert error_of("nosuch.zzz=1") == (
        "config error: unknown key nosuch.zzz (from --set nosuch.zzz)")


def test_file_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "[tm]\nfr_timerr = 3\n")
    assert error_of(path=path) == (
        f"config error: unknown key tm.fr_timerr (in {path}); did you mean tm.fr_timer?")
    assert error_of(path=write(tmp_path, '[msilo]\nexpire_time = "60"\n')) == (
        'config error: msilo.expire_time: Input should be a valid integer (got "60")')
    assert "invalid TOML" in error_of(path=write(tmp_path, "[msilo\n"))
    assert error_of(path=write(tmp_path, "msilo = 3\n")).startswith(
        "config error: msilo: must be a table")
    path = write(tmp_path, 'data_dir = "/x"\n')
    assert error_of(path=path) == f"config error: unknown key data_dir (in {path})"
    assert error_of(path=str(tmp_path / "missing.toml")).startswith("config error: cannot read")


def test_several_errors_report_the_first_and_count() -> None:
    line = error_of("msilo.expire_time=x", "tm.wt_timer=0")
    assert line.endswith("(and 1 more)")


# --- dump -----------------------------------------------------------------------


def test_dump_toml_round_trips(tmp_path: Path) -> None:
    original = load(
        'server.listen=["udp:[::1]:5070", "tcp:0.0.0.0:5080"]', "server.domains=['a.example']",
        "server.user_agent=quote\" back\\slash\ttab", "msilo.registrar=sip:reg@example.com",
        "tm.fr_timer=2.5", "proxy.relay_foreign=true", "server.route=mod.sub:fn",
        data_dir=str(tmp_path),
    )
    text = original.dump_toml()
    parsed = tomllib.loads(text)
    assert parsed["server"]["listen"] == ["udp:[::1]:5070", "tcp:0.0.0.0:5080"]
    assert parsed["msilo"]["registrar"] == "sip:reg@example.com"
    assert "# outbound_proxy is unset" in text
    reloaded = load_config(write(tmp_path, text), env={}, data_dir=str(tmp_path))
    assert reloaded.model_dump() == original.model_dump()
    assert reloaded.dump_toml() == text


def test_dump_of_defaults_round_trips(tmp_path: Path) -> None:
    c = load(data_dir=str(tmp_path))
    assert load_config(write(tmp_path, c.dump_toml()), env={},
                       data_dir=str(tmp_path)).model_dump() == c.model_dump()


def test_server_advertise_and_tcp_limits() -> None:
    c = load()
    assert c.server.advertise is None and c.server.advertise_address() is None
    assert c.server.tcp_idle_timeout == 3600
    assert c.server.tcp_max_connections == 2048
    c = load('server.advertise="sip.example.com:5080"', "server.tcp_idle_timeout=60",
             "server.tcp_max_connections=10")
    assert c.server.advertise_address() == ("sip.example.com", 5080)
    assert (c.server.tcp_idle_timeout, c.server.tcp_max_connections) == (60, 10)
    assert load('server.advertise="203.0.113.7"').server.advertise_address() == (
        "203.0.113.7", None)
    assert load('server.advertise="[2001:db8::1]:5070"').server.advertise_address() == (
        "2001:db8::1", 5070)
    assert "server.advertise" in error_of('server.advertise="bad host:1"')
    assert "server.tcp_max_connections" in error_of("server.tcp_max_connections=0")


def test_connection_hygiene_limits() -> None:
    c = load()
    assert (c.server.tcp_max_connections_per_ip, c.server.tcp_message_timeout,
            c.server.max_header_size) == (32, 10, 16384)
    c = load("server.tcp_max_connections_per_ip=0", "server.tcp_message_timeout=2",
             "server.max_header_size=4096")
    assert (c.server.tcp_max_connections_per_ip, c.server.tcp_message_timeout,
            c.server.max_header_size) == (0, 2, 4096)
    assert "server.tcp_message_timeout" in error_of("server.tcp_message_timeout=0")
    assert "server.max_header_size" in error_of("server.max_header_size=100")
    assert "server.tcp_max_connections_per_ip" in error_of("server.tcp_max_connections_per_ip=-1")


def test_cluster_identity_and_hop_address() -> None:
    c = load("cluster.instance_id=sip1", "cluster.advertise=10.0.0.11:5070")
    assert c.cluster.instance_id == "sip1"
    assert c.cluster.hop_address() == ("10.0.0.11", 5070)
    assert load("cluster.advertise=127.0.0.1:0").cluster.hop_address() == ("127.0.0.1", 0)
    assert load().cluster.hop_address() is None and load().cluster.instance_id is None
    assert (load().cluster.heartbeat_interval, load().cluster.stale_after) == (5.0, 20.0)


@pytest.mark.parametrize(("setting", "words"), [
    ("cluster.advertise=10.0.0.11", "expected host:port"),
    ("cluster.advertise=0.0.0.0:5070", "other instances cannot reach"),
    ("cluster.advertise=10.0.0.11:70000", "bad port"),
    ('cluster.instance_id="a b"', "no white space"),
    ("cluster.heartbeat_interval=0", "greater than 0"),
])
def test_bad_cluster_settings_name_the_key(setting: str, words: str) -> None:
    err = error_of(setting)
    assert setting.split("=")[0] in err and words in err, err


def test_database_urls_follow_the_data_dir_of_a_copy(tmp_path: Path) -> None:
    """A worker gets the configuration as JSON and its data dir set afterwards: the
    SQLite files it opens must be those under that data dir, not under its cwd."""
    config = load_config(None, ["registrar.db_url=sqlite:///loc.db"], env={},
                         data_dir=str(tmp_path / "a"))
    assert config.msilo_db.path == str(tmp_path / "a" / "sipsilo.db")
    assert config.msilo_db.key == "msilo.db_url"
    worker = Config.model_validate_json(config.model_dump_json()).model_copy(
        update={"data_dir": tmp_path / "b"})
    assert worker.msilo_db.path == str(tmp_path / "b" / "sipsilo.db")
    assert worker.silo_db_path() == str(tmp_path / "b" / "sipsilo.db")
    assert worker.registrar_db is not None
    assert worker.registrar_db.path == str(tmp_path / "b" / "loc.db")
    assert worker.registrar_db.key == "registrar.db_url"

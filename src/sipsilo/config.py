"""sipsilo configuration: pydantic models, layered loading and one-line errors.

Layers, lowest first: model defaults < TOML file < environment
(``SIPSILO_SECTION__KEY``) < ``--set section.key=value``. Environment and
``--set`` values are read as TOML values when they parse (``60``, ``true``,
``["udp:[::1]:5070"]``) and as plain strings otherwise.

Every problem surfaces as a :class:`ConfigError` whose text is one line naming
the key, e.g. ``config error: msilo.expire_time: Input should be a valid integer
(got "abc")``; the CLI prints it and exits 2. For an optional key (``registrar``,
``outbound_proxy``, ``route``, ``registrar.db_url``) an empty string means unset,
since TOML, the environment and the command line have no null.
"""

from __future__ import annotations

import difflib
import functools
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from sipsilo import __version__
from sipsilo.config_push import PushConfig, PushKeyError
from sipsilo.config_sections import (
    AuthConfig,
    ClusterConfig,
    HttpConfig,
    Seconds,
    TlsConfig,
    WebsocketConfig,
    _check_table_name,
    _empty_to_none,
    _lower,
    _one_to_list,
    _Section,
)
from sipsilo.config_toml import dump_sections
from sipsilo.config_values import (
    ListenAddress,
    _parse_port,
    _split_hostport,
    check_sip_uri,
    normalise_host,
    parse_cli_value,
    parse_listen,
    quote,
)
from sipsilo.db.errors import StoreConfigError
from sipsilo.db.url import DbUrl as ParsedDbUrl
from sipsilo.db.url import parse_db_url, sqlite_path
from sipsilo.transport.tls import TlsSetupError, client_context, server_context

__all__ = [
    "SECTIONS",
    "AuthConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "HttpConfig",
    "ListenAddress",
    "MsiloConfig",
    "ProxyConfig",
    "RegistrarConfig",
    "ServerConfig",
    "TlsConfig",
    "TmConfig",
    "WebsocketConfig",
    "load_config",
    "parse_cli_value",
    "sqlite_path",
]

ENV_PREFIX = "SIPSILO_"


class ConfigError(Exception):
    """A configuration problem; ``str(err)`` (and ``err.line``) is the one-line message."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        self.line = f"config error: {detail}"
        super().__init__(self.line)


class KeyedValueError(ValueError):
    """A model-level check that is about one key: the error is reported under it."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


# --- field types --------------------------------------------------------------


def _bool_to_int(value: Any) -> Any:
    # Kamailio's 0/1 parameters; "use_contact = true" is an obvious enough intent.
    return int(value) if isinstance(value, bool) else value


def _check_route(value: str) -> str:
    module, sep, func = value.partition(":")
    parts = module.split(".")
    if not sep or not func.isidentifier() or not all(p.isidentifier() for p in parts):
        raise ValueError(f'expected "module:function" (got {quote(value)})')
    return value


def parse_advertise(value: str) -> tuple[str, int | None]:
    """[server] advertise: "host" or "host:port" ("[v6]" / "[v6]:port")."""
    text = value.strip()
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address
    host, port = _split_hostport(text)
    return normalise_host(host), None if port is None else _parse_port(port)


def _check_advertise(value: str) -> str:
    parse_advertise(value)
    return value.strip()


Listen = Annotated[ListenAddress, PlainValidator(parse_listen), PlainSerializer(str)]
Host = Annotated[str, AfterValidator(normalise_host)]
Flag01 = Annotated[int, BeforeValidator(_bool_to_int), Field(ge=0, le=1)]
SipUriStr = Annotated[str | None, BeforeValidator(_empty_to_none),
                      AfterValidator(lambda v: None if v is None else check_sip_uri(v))]


def _check_db_url(value: str) -> str:
    """Refuse a ``db_url`` the store could not use, now rather than at its first use."""
    try:
        parse_db_url(value)
    except StoreConfigError as exc:
        raise ValueError(str(exc)) from None
    return value


@functools.lru_cache(maxsize=32)
def _database(raw: str, key: str, data_dir: Path) -> ParsedDbUrl:
    """A ``db_url`` parsed (once per URL, key and data dir: a configuration copied with
    another data dir, as a worker's is, gets its own), with the key for error lines."""
    return parse_db_url(raw, key, data_dir)


DbUrl = Annotated[str, AfterValidator(_check_db_url)]
OptDbUrl = Annotated[str | None, BeforeValidator(_empty_to_none),
                     AfterValidator(lambda v: None if v is None else _check_db_url(v))]
TimerSeconds = Annotated[float, Field(gt=0, le=3600)]

_DEFAULT_LISTEN = (ListenAddress("udp", "127.0.0.1", 5060), ListenAddress("tcp", "127.0.0.1", 5060))
# What "myself" includes for a wildcard listen address: without enumerating
# interfaces we can only vouch for loopback; set [server] domains for the rest.
_WILDCARD_SELF = {"0.0.0.0": "127.0.0.1", "::": "::1"}


AUTO_WORKERS_MAX = 4


def _auto_workers(value: object) -> object:
    """``workers = "auto"``: the CPUs this process may use, capped (each
    worker is a whole Python process of ~40 MB)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return max(1, min(len(os.sched_getaffinity(0)), AUTO_WORKERS_MAX))
    return value


class ServerConfig(_Section):
    listen: Annotated[list[Listen], BeforeValidator(_one_to_list), Field(min_length=1)] = Field(
        default_factory=lambda: list(_DEFAULT_LISTEN)
    )
    domains: Annotated[list[Host], BeforeValidator(_one_to_list)] = Field(default_factory=list)
    log_level: Annotated[Literal["debug", "info", "warning", "error"],
                         BeforeValidator(_lower)] = "info"
    # Processes that handle SIP (see docs/architecture.md, "Worker processes");
    # the branch tag that routes responses back to a worker has room for 64.
    # "auto": one per CPU, at most AUTO_WORKERS_MAX.
    workers: Annotated[int, BeforeValidator(_auto_workers), Field(ge=1, le=64)] = 1
    route: Annotated[str | None, BeforeValidator(_empty_to_none),
                     AfterValidator(lambda v: None if v is None else _check_route(v))] = None
    # Above [msilo] max_body plus headers, so a too-large MESSAGE over TCP gets
    # the silo's 413 rather than a closed connection.
    max_message_size: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 131072
    user_agent: str = f"sipsilo/{__version__}"
    # host or host:port put in Via and Record-Route instead of the listen address
    advertise: Annotated[
        str | None, BeforeValidator(_empty_to_none),
        AfterValidator(lambda v: None if v is None else _check_advertise(v)),
    ] = None
    tcp_idle_timeout: Annotated[int, Field(ge=0)] = 3600  # seconds; 0: never
    tcp_max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 2048
    # Of those, how many one source address (an IPv6 /64) may hold; 0: no cap.
    tcp_max_connections_per_ip: Annotated[int, Field(ge=0, le=1_000_000)] = 32
    # Seconds a connection has to complete a message (its first: from the
    # accept); bytes trickling in do not extend it (transport.stream).
    tcp_message_timeout: Annotated[int, Field(ge=1, le=3600)] = 10
    # A header block larger than this is refused while it is being read.
    max_header_size: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 16384
    # "json": one JSON object per log line on stderr, for Loki/ELK (sipsilo.ops.logs)
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"

    def advertise_address(self) -> tuple[str, int | None] | None:
        return None if self.advertise is None else parse_advertise(self.advertise)

    @field_validator("listen")
    @classmethod
    def _no_duplicate_listen(cls, value: list[ListenAddress]) -> list[ListenAddress]:
        seen: set[ListenAddress] = set()
        for addr in value:
            if addr in seen:
                raise ValueError(f"duplicate listen address {quote(str(addr))}")
            seen.add(addr)
        return value

    def effective_domains(self) -> list[str]:
        """Hosts that count as "myself": ``domains`` if set, else the listen hosts + localhost.

        A wildcard listen address contributes only its loopback address.
        """
        if self.domains:
            return list(dict.fromkeys(self.domains))
        hosts = [_WILDCARD_SELF.get(addr.host, addr.host) for addr in self.listen]
        return list(dict.fromkeys([*hosts, "localhost"]))


class MsiloConfig(_Section):
    db_url: DbUrl = "sqlite:///sipsilo.db"
    db_table: Annotated[str, AfterValidator(_check_table_name)] = "silo"
    registrar: SipUriStr = None
    expire_time: Seconds = 259200
    check_time: Seconds = 30
    clean_period: Seconds = 5
    use_contact: Flag01 = 1
    add_date: Flag01 = 1
    # Storage limits (0: none). Kamailio's max_messages defaults to 0; here a
    # mailbox, a sender and the whole silo are capped by default (issue 11).
    max_messages: Annotated[int, Field(ge=0)] = 10000
    max_sender_messages: Annotated[int, Field(ge=0)] = 500_000
    max_rows: Annotated[int, Field(ge=0)] = 2_000_000
    # Stores per second (and at once) from one source address of a sender
    # nobody authenticated (0: no limit).
    foreign_store_rate: Annotated[float, Field(ge=0)] = 20.0
    foreign_store_burst: Annotated[int, Field(ge=1)] = 100
    max_body: Annotated[int, Field(ge=1)] = 65536
    outbound_proxy: SipUriStr = None
    # From of reminders (m_store(..., send_at=...)); unset: no reminders (Kamailio's).
    reminder: SipUriStr = None
    notify_offline: bool = True
    claim_ttl: Seconds = 60
    # Connections per pool for MySQL/PostgreSQL (the message store's, and the
    # location store's when [registrar] db_url is a server too); unused by SQLite.
    db_pool_min: Annotated[int, Field(ge=0, le=1000)] = 1
    db_pool_max: Annotated[int, Field(ge=1, le=1000)] = 10

    @model_validator(mode="after")
    def _pool_ordered(self) -> MsiloConfig:
        if self.db_pool_min > self.db_pool_max:
            raise KeyedValueError("db_pool_min", f"must not exceed msilo.db_pool_max "
                                  f"({self.db_pool_min} > {self.db_pool_max})")
        return self


class RegistrarConfig(_Section):
    default_expires: Seconds = 3600
    min_expires: Annotated[int, Field(ge=0)] = 60
    max_expires: Seconds = 86400
    # Contacts one AoR may hold (0: no limit): a REGISTER that would add more
    # gets 403, so one client cannot fill the location service.
    max_contacts: Annotated[int, Field(ge=0, le=10000)] = 16
    db_url: OptDbUrl = None

    @model_validator(mode="after")
    def _ordered(self) -> RegistrarConfig:
        if self.min_expires > self.max_expires:
            raise KeyedValueError("min_expires", f"must not exceed registrar.max_expires "
                                  f"({self.min_expires} > {self.max_expires})")
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise KeyedValueError(
                "default_expires",
                f"must be between registrar.min_expires ({self.min_expires}) and "
                f"registrar.max_expires ({self.max_expires}) (got {self.default_expires})",
            )
        return self


class TmConfig(_Section):
    fr_timer: TimerSeconds = 10.0
    fr_inv_timer: TimerSeconds = 15.0
    wt_timer: TimerSeconds = 10.0


class ProxyConfig(_Section):
    relay_foreign: bool = False
    # Seconds an in-dialog Route token (our Record-Route `sr`) stays valid: the
    # longest call; also how often the key that signs the tokens rotates.
    route_token_lifetime: Annotated[int, Field(ge=60, le=30 * 86400)] = 43200


class ControlConfig(_Section):
    socket: Annotated[str, Field(min_length=1)] = "sipsilo.ctl"


class Config(_Section):
    """The whole configuration. Sections are attributes: ``config.msilo.expire_time``."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    msilo: MsiloConfig = Field(default_factory=MsiloConfig)
    registrar: RegistrarConfig = Field(default_factory=RegistrarConfig)
    tm: TmConfig = Field(default_factory=TmConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    websocket: WebsocketConfig = Field(default_factory=WebsocketConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    # Not a TOML key (load_config rejects it in files): --data-dir, absolute.
    data_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    # What load_config read this from, for reload() on SIGHUP.
    _source: tuple[Any, ...] | None = PrivateAttr(default=None)

    def reload(self) -> Config:
        """Read the same file, environment and --set again (SIGHUP); ConfigError on a problem.

        A configuration not loaded by load_config (a worker's copy) comes back as is.
        """
        if self._source is None:
            return self
        path, sets, data_dir = self._source
        return load_config(path, sets, data_dir=data_dir)

    @model_validator(mode="after")
    def _tls_usable(self) -> Config:
        """A tls/wss listener needs a certificate and key that load, and a ca_list
        given must load (it verifies the TLS peers we connect to): say which key is wrong."""
        settings = self.tls.settings(self.data_dir)
        try:
            if self.uses_tls():
                server_context(settings)
            if settings.ca_list is not None:
                client_context(settings)
        except TlsSetupError as exc:
            raise KeyedValueError(exc.key, str(exc)) from None
        try:
            self.push.resolve(self.data_dir)
        except PushKeyError as exc:
            raise KeyedValueError(f"push.{exc.key}", str(exc)) from None
        return self

    def uses_tls(self) -> bool:
        """Listeners that need the server certificate."""
        return any(a.proto in ("tls", "wss") for a in self.server.listen)

    @property
    def msilo_db(self) -> ParsedDbUrl:
        """``[msilo] db_url``: the message store's database, and the subscriber table's."""
        return _database(self.msilo.db_url, "msilo.db_url", self.data_dir)

    @property
    def registrar_db(self) -> ParsedDbUrl | None:
        """``[registrar] db_url``, None when bindings are kept in memory."""
        url = self.registrar.db_url
        return None if url is None else _database(url, "registrar.db_url", self.data_dir)

    def silo_db_path(self) -> str | None:
        """The msilo SQLite file resolved against the data dir; None if not SQLite."""
        return None if self.msilo_db.is_server else self.msilo_db.path

    def registrar_db_path(self) -> str | None:
        """The registrar SQLite file, ":memory:" when no db_url is set, None if not SQLite."""
        db = self.registrar_db
        if db is None:
            return ":memory:"
        return None if db.is_server else db.path

    def auth_realm(self) -> str:
        """The digest realm: ``[auth] realm``, else the first served domain."""
        return self.auth.realm or self.server.effective_domains()[0]

    def control_socket_path(self) -> Path:
        return self.data_dir / self.control.socket

    def dump_toml(self) -> str:
        """The effective configuration as TOML; loading it gives back this configuration."""
        sections = self.model_dump(mode="python")
        header = f"sipsilo {__version__} effective configuration\ndata dir: {self.data_dir}"
        return dump_sections(sections, header)


SECTIONS: tuple[str, ...] = tuple(n for n in Config.model_fields if n != "data_dir")


# --- loading ------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None,
    sets: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Config:
    """Build the effective configuration; raise :class:`ConfigError` on any problem.

    ``env`` defaults to ``os.environ``; pass ``{}`` to ignore the environment.
    """
    sets = list(sets)
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, str], str] = {}  # (section, key) -> where the last value came from
    if path is not None:
        layer = _read_file(path)
        _merge(merged, layer)
        for section, table in layer.items():
            for key in table if isinstance(table, dict) else ("",):
                origin[(section, key)] = f"in {os.fspath(path)}"
    _merge(merged, _env_layer(os.environ if env is None else env, origin))
    _merge(merged, _set_layer(sets, origin))
    for name, table in merged.items():
        if name not in SECTIONS:
            key = next(iter(table), "") if isinstance(table, dict) and table else ""
            raise ConfigError(_unknown_key(name, key, origin))
    base = Path(data_dir).expanduser() if data_dir is not None else Path.cwd()
    try:
        config = Config.model_validate({**merged, "data_dir": base.absolute()})
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(_format_error(errors[0], origin) + more) from None
    config._source = (path, list(sets), data_dir)
    return config


def _unknown_key(section: str, key: str, origin: Mapping[tuple[str, str], str]) -> str:
    """"unknown key a.b (in FILE / from --set / from the environment); did you mean a.c?"."""
    name = f"{section}.{key}" if key else section
    where = origin.get((section, key)) or origin.get((section, ""))
    text = f"unknown key {name}" + (f" ({where})" if where else "")
    known = [f"{s}.{k}" for s in SECTIONS for k in _section_keys(s)]
    pool = known if key else list(SECTIONS)
    nearest = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not nearest and key:
        # A right key in the wrong section (msilo.fr_timer) is a common slip too.
        nearest = [k for k in known if k.endswith("." + key)][:1]
    return text + (f"; did you mean {nearest[0]}?" if nearest else "")


def _section_keys(section: str) -> list[str]:
    model = Config.model_fields[section].annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(
        model, BaseModel) else []


def _read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{os.fspath(path)}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{os.fspath(path)}: invalid TOML: not UTF-8") from None


def _env_layer(
    env: Mapping[str, str], origin: dict[tuple[str, str], str] | None = None
) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue  # e.g. SIPSILO_DATA_DIR, read by the CLI
        section, _, key = name[len(ENV_PREFIX):].partition("__")
        if not section or not key:
            raise ConfigError(f"environment variable {name}: expected SIPSILO_SECTION__KEY")
        layer.setdefault(section.lower(), {})[key.lower()] = parse_cli_value(raw)
        if origin is not None:
            origin[(section.lower(), key.lower())] = f"from environment variable {name}"
    return layer


def _set_layer(
    sets: Iterable[str], origin: dict[tuple[str, str], str] | None = None
) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for item in sets:
        name, eq, raw = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not eq or not dot or not section or not key:
            raise ConfigError(f"--set {quote(item)}: expected section.key=value")
        layer.setdefault(section.lower(), {})[key.lower()] = parse_cli_value(raw.strip())
        if origin is not None:
            origin[(section.lower(), key.lower())] = f"from --set {name.strip()}"
    return layer


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Key-level merge: a later layer replaces single keys, not whole sections."""
    for section, table in layer.items():
        current = into.get(section)
        if isinstance(current, dict) and isinstance(table, dict):
            current.update(table)
        elif current is None or isinstance(table, dict) is isinstance(current, dict):
            into[section] = dict(table) if isinstance(table, dict) else table
        # else: the file gave a non-table section; keep it so its error is reported


def _loc(parts: Iterable[int | str]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _format_error(
    err: ErrorDetails, origin: Mapping[tuple[str, str], str] | None = None
) -> str:
    parts: list[int | str] = list(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, KeyedValueError):
        parts.append(cause.key)
    key = _loc(parts) or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        if len(parts) == 2:
            return _unknown_key(str(parts[0]), str(parts[1]), origin or {})
        return f"unknown key {key}"
    if kind == "model_type":
        return f"{key}: must be a table [{key}] (got {_short(err['input'])})"
    if kind == "value_error" and cause is not None:
        # Our validators' messages already quote the offending value.
        return f"{key}: {cause}"
    return f"{key}: {err['msg']} (got {_short(err['input'])})"


def _short(value: Any) -> str:
    text = quote(value)
    return text if len(text) <= 80 else text[:77] + "..."

"""The sections of :class:`sipsilo.config.Config` about the edges of the server: the
HTTP endpoint, digest authentication, the state several processes share, TLS and
WebSocket; with the validators of their values.  ``sipsilo.config`` re-exports them.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
)

from sipsilo.config_values import _parse_port, _split_hostport, normalise_host, quote
from sipsilo.db.url import mask_url
from sipsilo.transport.tls import TlsSettings


def _empty_to_none(value: Any) -> Any:
    return None if value == "" else value


def _one_to_list(value: Any) -> Any:
    # A lone string is a one-item list: SIPSILO_SERVER__LISTEN=udp:0.0.0.0:5060 reads
    # better than a quoted TOML array in a shell.
    return [value] if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value



def _check_table_name(value: str) -> str:
    # The table name is spliced into SQL text (it cannot be a bound parameter),
    # so only plain identifiers are allowed.
    if not value.isidentifier() or not value.isascii():
        raise ValueError(f"not a valid table name {quote(value)}")
    return value


Seconds = Annotated[int, Field(ge=1)]


class _Section(BaseModel):
    # strict: "60" in a TOML file is a string and an error, not silently an int.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)



def _check_http_listen(value: str) -> str:
    host, port = _split_hostport(value.strip())
    if port is None:
        raise ValueError(f'expected "host:port", e.g. "127.0.0.1:9060" (got {quote(value)})')
    _parse_port(port)
    normalise_host(host)
    return value.strip()


class HttpConfig(_Section):
    """The HTTP endpoint: /metrics, /health, /ready and the admin API (sipsilo.http)."""

    listen: Annotated[str | None, BeforeValidator(_empty_to_none),
                      AfterValidator(lambda v: None if v is None else _check_http_listen(v))] = None
    # The bearer token of /api/v1/ is read from this file (relative: to the data dir).
    admin_token_file: Annotated[str | None, BeforeValidator(_empty_to_none)] = None

    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, port = _split_hostport(self.listen)
        return normalise_host(host), _parse_port(port or "")


def _check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"not a network in CIDR notation {quote(value)}") from None


DigestAlgorithm = Literal["SHA-256", "MD5"]
# MD5 only by default: every client we measured registers with it (README, Security).
# baresip 1.0.0 refuses a 401 that has any SHA-256 challenge in it, even after an MD5
# one; SIPp 3.6, sipsak 0.9.8 and JsSIP refuse one whose *first* challenge is SHA-256.
_ALGORITHMS: tuple[DigestAlgorithm, ...] = ("MD5",)


def _check_auth_enabled(value: Any) -> Literal["auto"] | bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() == "auto":
        return "auto"
    raise ValueError(f'expected true, false or "auto" (got {quote(value)})')


def _check_realm(value: str) -> str:
    # Spliced into a quoted-string of the challenge; a quote or backslash there
    # would need escaping every client gets wrong.
    if not value or any(c in value for c in '"\\\r\n'):
        raise ValueError(f"bad realm {quote(value)}")
    return value


class AuthConfig(_Section):
    """Digest authentication (RFC 3261 §22) of local users against the subscriber table."""

    # "auto": on when the subscriber table has users (at start-up, and looked at again
    # once a second while off, so that a user added to a running server counts).
    enabled: Annotated[Literal["auto"] | bool, PlainValidator(_check_auth_enabled)] = "auto"
    realm: Annotated[str | None, BeforeValidator(_empty_to_none),
                     AfterValidator(lambda v: None if v is None else _check_realm(v))] = None
    trusted: Annotated[list[Annotated[str, AfterValidator(_check_cidr)]],
                       BeforeValidator(_one_to_list)] = Field(default_factory=list)
    nonce_expires: Annotated[int, Field(ge=10, le=86400)] = 300
    max_failures: Annotated[int, Field(ge=0)] = 5   # 0: never block
    block_time: Seconds = 60
    algorithms: Annotated[list[DigestAlgorithm], BeforeValidator(_one_to_list),
                          Field(min_length=1)] = Field(default_factory=lambda: [*_ALGORITHMS])
    db_table: Annotated[str, AfterValidator(_check_table_name)] = "subscriber"

    @field_validator("algorithms")
    @classmethod
    def _no_duplicate_algorithms(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("duplicate algorithm")
        return value


def _check_redis_url(value: str) -> str:
    scheme = value.partition("://")[0].lower() if "://" in value else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL {quote(mask_url(value))} (expected "
                         "redis://[:password@]host[:port][/db], rediss://... or unix:///path)")
    return value


def _check_instance_id(value: str) -> str:
    if len(value) > 60:
        raise ValueError(f"an instance id has at most 60 characters (got {len(value)})")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"an instance id has no white space (got {quote(value)})")
    return value


def parse_hop_address(value: str) -> tuple[str, int]:
    """[cluster] advertise: "host:port", port 0 allowed (any free port)."""
    text = value.strip()
    host, port = _split_hostport(text)
    if port is None:
        raise ValueError(f"expected host:port (port 0: any free port), got {quote(value)}")
    number = 0 if port == "0" else _parse_port(port)
    host = normalise_host(host)
    if host in ("0.0.0.0", "::"):
        raise ValueError(f"other instances cannot reach {quote(value)}: name an address of "
                         "this host")
    return host, number


def _check_hop_address(value: str) -> str:
    parse_hop_address(value)
    return value.strip()


def _check_redis_prefix(value: str) -> str:
    if any(c.isspace() for c in value):
        raise ValueError(f"a key prefix has no white space (got {quote(value)})")
    return value


class ClusterConfig(_Section):
    """State that several processes of one deployment (workers, instances) share."""

    # Digest replay (nonce-count) and failure-blocking state in this Redis; unset: in
    # the supervisor for its workers, in each process's memory otherwise.
    redis_url: Annotated[str | None, BeforeValidator(_empty_to_none),
                         AfterValidator(lambda v: None if v is None else _check_redis_url(v))
                         ] = None
    redis_prefix: Annotated[str, Field(min_length=1, max_length=100),
                            AfterValidator(_check_redis_prefix)] = "sipsilo:"
    # This instance's name among the instances on one database (heartbeat rows,
    # `sipsilo cluster status`, delivery claims). Unset: hostname:port:<hash of
    # the data dir>, stable across restarts, so a restarted instance takes back
    # its own delivery claims at once.
    instance_id: Annotated[str | None, BeforeValidator(_empty_to_none),
                           AfterValidator(lambda v: None if v is None
                                          else _check_instance_id(v))] = None
    # "host:port" other instances reach this one's internal hop listener at (TCP;
    # the flow owner hand-over, docs/scaling.md): bound here, and recorded with
    # every binding made over a connection of this instance. Port 0: any free
    # port (the one bound is recorded); with workers, worker i uses port + i.
    # Unset: no hop between instances; a binding is reachable elsewhere only at
    # its Contact address.
    advertise: Annotated[
        str | None, BeforeValidator(_empty_to_none),
        AfterValidator(lambda v: None if v is None else _check_hop_address(v)),
    ] = None
    # Heartbeat rows in the shared database (registrar.db_url): written every
    # heartbeat_interval seconds; an instance not seen for stale_after seconds is
    # not listed as live.
    heartbeat_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    stale_after: Annotated[float, Field(gt=0, le=86400)] = 20.0

    def hop_address(self) -> tuple[str, int] | None:
        if self.advertise is None:
            return None
        return parse_hop_address(self.advertise)


class TlsConfig(_Section):
    """Certificates for tls/wss listeners and for the TLS connections we open."""

    # Relative paths are relative to the data dir.
    certificate: str = "cert.pem"  # PEM chain, our certificate first
    private_key: str = "key.pem"
    ca_list: str = ""  # CAs to verify peers with; empty: the system store
    verify_client: Annotated[Literal["none", "optional", "required"],
                             BeforeValidator(_lower)] = "none"
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"

    def settings(self, data_dir: Path) -> TlsSettings:
        def path(value: str) -> Path | None:
            return None if not value else data_dir / Path(value).expanduser()

        return TlsSettings(path(self.certificate), path(self.private_key), path(self.ca_list),
                           self.verify_client, self.min_version)


def _check_origin(value: str) -> str:
    text = value.strip().rstrip("/").lower()
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"not an origin {quote(value)} (expected e.g. https://app.example.com)")
    return text


class WebsocketConfig(_Section):
    # Origin header values a ws/wss handshake may carry; empty: any.
    allowed_origins: Annotated[list[Annotated[str, AfterValidator(_check_origin)]],
                               BeforeValidator(_one_to_list)] = Field(default_factory=list)

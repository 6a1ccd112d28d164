"""``db_url``: the one parser of database URLs, run once when the configuration loads.

A :class:`DbUrl` knows the configuration key it came from (``msilo.db_url``,
``registrar.db_url``), so every "cannot connect" line names that key the same way
(:meth:`DbUrl.unavailable`), and a relative SQLite path is already resolved against the
data dir.  URLs follow SQLAlchemy's spelling:

* ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``sqlite://`` or
  ``sqlite:///:memory:``; options ``?synchronous=FULL|NORMAL|EXTRA&busy_timeout=SECONDS``;
* ``mysql[+asyncmy]://user:pass@host[:port]/db`` (also ``mariadb://``);
* ``postgres[ql][+asyncpg]://user:pass@host[:port]/db``;
  both with ``?connect_timeout=SECONDS``.  User and password may carry URL escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import StoreConfigError, StoreUnavailable

SqlDialect = Literal["sqlite", "mysql", "postgresql"]

_SCHEMES: dict[str, SqlDialect] = {
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mysql+asyncmy": "mysql",
    "mariadb": "mysql",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "postgresql+asyncpg": "postgresql",
}
_DEFAULT_PORT = {"mysql": 3306, "postgresql": 5432}
_HINT = "expected sqlite:///path, mysql://user:pass@host[:port]/db or postgresql://..."


def mask_url(url: str) -> str:
    """The URL with its password replaced, so error lines can go into logs."""
    return re.sub(r"^([^:/]+://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dialect_of(db_url: str) -> SqlDialect | None:
    """The dialect of *db_url*'s scheme (None if the scheme is unknown)."""
    if "://" not in db_url:
        return None
    scheme = db_url.partition("://")[0].lower()
    if scheme.split("+", 1)[0] == "sqlite":
        return "sqlite"
    return _SCHEMES.get(scheme)


@dataclass(frozen=True)
class DbUrl:
    """A parsed ``db_url``.  For SQLite ``path`` (absolute, or ":memory:") is set."""

    dialect: SqlDialect
    raw: str
    key: str = "db_url"
    host: str = ""
    port: int = 0
    user: str | None = None
    password: str | None = None
    database: str = ""
    path: str = ""
    connect_timeout: float = 10.0
    synchronous: str = "FULL"
    busy_timeout: float = 10.0

    @property
    def masked(self) -> str:
        return mask_url(self.raw)

    @property
    def is_server(self) -> bool:
        """MySQL/MariaDB or PostgreSQL (a pool of connections), not a SQLite file."""
        return self.dialect != "sqlite"

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        """The one line for "cannot use this database", naming the configuration key."""
        err = StoreUnavailable(f"{self.key}: {exc}")
        err.__cause__ = exc
        return err

    def resolved(self, data_dir: str | Path | None) -> DbUrl:
        """The same URL with a relative SQLite path made absolute under *data_dir*."""
        if self.dialect != "sqlite" or self.path == ":memory:" or Path(self.path).is_absolute():
            return self
        base = Path(data_dir) if data_dir is not None else Path.cwd()
        return replace(self, path=str(base / self.path))


def parse_db_url(raw: str, key: str = "db_url", data_dir: str | Path | None = None) -> DbUrl:
    """Parse and check *raw*; :class:`StoreConfigError` says what is wrong in one line
    (the password masked).  A relative SQLite path is resolved against *data_dir*
    (the working directory when None)."""
    dialect = dialect_of(raw)
    if dialect is None:
        raise StoreConfigError(f"unsupported database URL {_quote(mask_url(raw))} ({_HINT})")
    if dialect == "sqlite":
        return _parse_sqlite(raw, key).resolved(data_dir)
    parts = urlsplit(raw)
    try:
        port = parts.port or _DEFAULT_PORT[dialect]
    except ValueError:
        raise StoreConfigError(f"bad port in database URL {_quote(mask_url(raw))}") from None
    if not parts.hostname:
        raise StoreConfigError(f"missing host in database URL {_quote(mask_url(raw))} ({_HINT})")
    database = unquote(parts.path.lstrip("/"))
    if not database.strip("/"):
        raise StoreConfigError(
            f"missing database name in URL {_quote(mask_url(raw))} ({_HINT})")
    options = dict(parse_qsl(parts.query))
    timeout = 10.0
    if "connect_timeout" in options:
        try:
            timeout = float(options.pop("connect_timeout"))
        except ValueError:
            raise StoreConfigError(f"bad connect_timeout in {_quote(mask_url(raw))}") from None
    if options:
        raise StoreConfigError(
            f"unknown db_url option(s) {sorted(options)} in {_quote(mask_url(raw))}")
    return DbUrl(
        dialect, raw, key,
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=database,
        connect_timeout=timeout,
    )


def _parse_sqlite(raw: str, key: str) -> DbUrl:
    rest, _, query = raw.partition("://")[2].partition("?")
    # "sqlite://" alone is SQLAlchemy's in-memory database.
    if rest and (not rest.startswith("/") or rest == "/"):
        raise StoreConfigError(f"bad sqlite URL {_quote(raw)} (expected sqlite:///relative/path "
                               "or sqlite:////absolute/path)")
    synchronous, busy = "FULL", 10.0
    for name, value in parse_qsl(query):
        if name == "synchronous" and value.upper() in ("FULL", "NORMAL", "EXTRA"):
            synchronous = value.upper()
        elif name == "busy_timeout":
            try:
                busy = float(value)
            except ValueError:
                raise StoreConfigError(f"bad busy_timeout in {_quote(raw)}") from None
        elif name == "synchronous":
            raise StoreConfigError(
                f"bad synchronous in {_quote(raw)} (expected FULL, NORMAL or EXTRA)")
        else:
            raise StoreConfigError(f"unknown sqlite URL option {name!r} in {_quote(raw)}")
    path = rest[1:]
    if path in ("", ":memory:"):
        path = ":memory:"
    return DbUrl("sqlite", raw, key, path=path, synchronous=synchronous, busy_timeout=busy)





def sqlite_path(db_url: str, data_dir: str | Path | None = None) -> str | None:
    """Where an ``sqlite://`` URL puts its database (":memory:" for memory), None for a
    database server."""
    url = parse_db_url(db_url, data_dir=data_dir)
    return None if url.is_server else url.path

__all__ = ["DbUrl", "SqlDialect", "dialect_of", "mask_url", "parse_db_url", "sqlite_path"]

"""The one definition of the message-store schema, its DDL per dialect, and migrations.

The table is Kamailio's ``silo`` table, schema version 8, column for column, so that
Kamailio's msilo can use a database created by sipsilo and vice versa.  Our own delivery
bookkeeping lives in extra columns that are nullable or have defaults: Kamailio's INSERT
names its columns explicitly and its SELECT names the columns it reads, so it never sees
them.  Kamailio checks only the ``version`` row (``table_name=<table>, table_version=8``);
our own schema version lives in a separate ``sipsilo_version`` table so that the two
version schemes never collide.

Only the standard library is used: migrations run against any DB-API 2 connection that
is in autocommit mode (for sqlite3: ``isolation_level=None``), and the runner issues the
transaction statements itself so that it controls locking.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .errors import MigrationError

Dialect = Literal["sqlite", "mysql", "postgresql"]
DIALECTS: tuple[Dialect, ...] = ("sqlite", "mysql", "postgresql")

#: The ``version`` row Kamailio 5.x msilo requires for its table.
KAMAILIO_TABLE_VERSION = 8
#: Kamailio's own version-bookkeeping table.
KAMAILIO_VERSION_TABLE = "version"
#: Our schema-version table: one row per component.
SIPSILO_VERSION_TABLE = "sipsilo_version"

Kind = Literal["id", "varchar", "int", "blob", "text"]


@dataclass(frozen=True)
class Column:
    """A dialect-neutral column description."""

    name: str
    kind: Kind
    length: int | None = None  # for varchar
    default: str | int | None = None  # None: no DEFAULT clause
    not_null: bool = False
    kamailio: bool = True  # part of Kamailio's schema v8 (False: our extension)


#: Kamailio's silo table, schema version 8, in Kamailio's column order.
KAMAILIO_COLUMNS: tuple[Column, ...] = (
    Column("id", "id", not_null=True),
    Column("src_addr", "varchar", 255, "", True),
    Column("dst_addr", "varchar", 255, "", True),
    Column("username", "varchar", 64, "", True),
    Column("domain", "varchar", 64, "", True),
    Column("inc_time", "int", None, 0, True),
    Column("exp_time", "int", None, 0, True),
    Column("snd_time", "int", None, 0, True),
    Column("ctype", "varchar", 32, "text/plain", True),
    Column("body", "blob"),
    Column("extra_hdrs", "text"),
    Column("callid", "varchar", 128, "", True),
    Column("status", "int", None, 0, True),
)

#: Our extension columns.  Every one is nullable or defaulted, so Kamailio's INSERT,
#: which does not name them, still succeeds.
EXTRA_COLUMNS: tuple[Column, ...] = (
    # Which server instance is delivering this row, and until when the claim holds.
    Column("claim_owner", "varchar", 64, kamailio=False),
    Column("claim_until", "int", None, 0, True, kamailio=False),
    Column("attempts", "int", None, 0, True, kamailio=False),
    # Full Content-Type with parameters; Kamailio's ctype holds type/subtype only (32 chars).
    # TEXT, because a parameter list has no useful upper bound.
    Column("ctype_full", "text", kamailio=False),
    # Which request a row stores (hash of Call-ID, CSeq, From tag and owner), under
    # a unique index, so a re-sent MESSAGE is not stored twice.  Nullable: Kamailio
    # never sets it, and a unique index allows any number of NULLs.
    Column("msg_key", "varchar", 64, kamailio=False),
)

COLUMNS: tuple[Column, ...] = KAMAILIO_COLUMNS + EXTRA_COLUMNS

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_identifier(name: str) -> str:
    """Table names are interpolated into SQL, so accept plain identifiers only."""
    if not _IDENT.match(name):
        raise ValueError(f"invalid SQL table name {name!r}: use letters, digits and '_'")
    return name


def _quote_default(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def column_type(col: Column, dialect: Dialect) -> str:
    """The column type as Kamailio's own DDL for *dialect* spells it."""
    if col.kind == "id":
        return {
            # AUTOINCREMENT: an id is never handed out again after its row was
            # deleted, so "message 7" in a log or an admin command means one message.
            "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
            "mysql": "INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY",
            "postgresql": "SERIAL PRIMARY KEY",
        }[dialect]
    if col.kind == "varchar":
        return f"VARCHAR({col.length})"
    if col.kind == "int":
        return "INT" if dialect == "mysql" else "INTEGER"
    if col.kind == "blob":
        return "BYTEA" if dialect == "postgresql" else "BLOB"
    return "TEXT"


def column_ddl(col: Column, dialect: Dialect) -> str:
    parts = [col.name, column_type(col, dialect)]
    # MySQL refuses a DEFAULT on TEXT/BLOB columns; none of ours has one.
    if col.default is not None:
        parts.append("DEFAULT " + _quote_default(col.default))
    if col.not_null:
        parts.append("NOT NULL")
    return " ".join(parts)


def account_index_name(table: str, dialect: Dialect) -> str:
    # MySQL index names are per table (Kamailio: account_idx); SQLite and PostgreSQL index
    # names share one namespace per schema, so Kamailio prefixes the table name there.
    return "account_idx" if dialect == "mysql" else f"{table}_account_idx"


def expiry_index_name(table: str, dialect: Dialect) -> str:
    return "exp_time_idx" if dialect == "mysql" else f"{table}_exp_time_idx"


def create_table_sql(table: str, dialect: Dialect, *, if_not_exists: bool = True) -> str:
    check_identifier(table)
    cols = ",\n    ".join(column_ddl(c, dialect) for c in COLUMNS)
    ine = "IF NOT EXISTS " if if_not_exists else ""
    return f"CREATE TABLE {ine}{table} (\n    {cols}\n){table_options(dialect)}"


def table_options(dialect: Dialect) -> str:
    # Kamailio's kamdbctl creates its MySQL database with a UTF-8 charset; say so per
    # table so a server whose default is latin1 still stores UTF-8 URIs and headers.
    # utf8mb4 rather than the 3-byte "utf8": a 4-byte character in extra_hdrs must not
    # make the INSERT fail under strict mode.
    return " DEFAULT CHARSET=utf8mb4" if dialect == "mysql" else ""


def create_index_sql(table: str, dialect: Dialect) -> list[str]:
    """Index DDL.  MySQL lacks CREATE INDEX IF NOT EXISTS; the runner checks first there."""
    ine = "" if dialect == "mysql" else "IF NOT EXISTS "
    return [
        f"CREATE INDEX {ine}{account_index_name(table, dialect)} ON {table} (username, domain)",
        f"CREATE INDEX {ine}{expiry_index_name(table, dialect)} ON {table} (exp_time)",
    ]


def kamailio_version_table_sql(dialect: Dialect) -> str:
    """Kamailio's ``version`` table, as its kamdbctl creates it."""
    unsigned = " UNSIGNED" if dialect == "mysql" else ""
    itype = "INTEGER" if dialect != "mysql" else "INT"
    return (
        f"CREATE TABLE IF NOT EXISTS {KAMAILIO_VERSION_TABLE} (\n"
        "    table_name VARCHAR(32) NOT NULL,\n"
        f"    table_version {itype}{unsigned} DEFAULT 0 NOT NULL,\n"
        "    CONSTRAINT version_table_name_idx UNIQUE (table_name)\n"
        f"){table_options(dialect)}"
    )


def sipsilo_version_table_sql(dialect: Dialect) -> str:
    itype = "INTEGER" if dialect != "mysql" else "INT"
    return (
        f"CREATE TABLE IF NOT EXISTS {SIPSILO_VERSION_TABLE} (\n"
        "    component VARCHAR(64) PRIMARY KEY NOT NULL,\n"
        f"    version {itype} DEFAULT 0 NOT NULL\n"
        f"){table_options(dialect)}"
    )


def _index_name(table: str, dialect: Dialect, name: str) -> str:
    return name if dialect == "mysql" else f"{table}_{name}"


def v2_index_sql(table: str, dialect: Dialect) -> list[tuple[str, str]]:
    """(name, DDL) of the indexes of schema version 2: the unique message key
    (idempotent store) and the sender (per-sender cap, an index-only count)."""
    ine = "" if dialect == "mysql" else "IF NOT EXISTS "
    key, sender = _index_name(table, dialect, "msg_key_idx"), _index_name(
        table, dialect, "src_addr_idx")
    return [
        (key, f"CREATE UNIQUE INDEX {ine}{key} ON {table} (msg_key)"),
        (sender, f"CREATE INDEX {ine}{sender} ON {table} (src_addr)"),
    ]


def full_ddl(table: str = "silo", dialect: Dialect = "sqlite") -> list[str]:
    """Every statement that creates a fresh database (for docs and `db init --print`)."""
    return [
        kamailio_version_table_sql(dialect),
        create_table_sql(table, dialect),
        *create_index_sql(table, dialect),
        sipsilo_version_table_sql(dialect),
        *(sql for _, sql in v2_index_sql(table, dialect)),
        *push_table_sql(table, dialect),
    ]


def push_table_name(table: str) -> str:
    """The push-target table of silo table *table* (its SQL: ``sipsilo.push.store``)."""
    return f"{table}_push"


def push_table_sql(table: str, dialect: str) -> list[str]:
    """DDL of the push-target table: the last RFC 8599 push target of each AoR.
    Idempotent, and only a primary key, so no dialect lacks the IF NOT EXISTS it needs."""
    t = push_table_name(check_identifier(table))
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (\n"
        "    aor VARCHAR(255) PRIMARY KEY NOT NULL,\n"
        "    provider VARCHAR(32) NOT NULL,\n"
        "    prid TEXT NOT NULL,\n"
        "    param TEXT NOT NULL,\n"
        "    purr TEXT NOT NULL,\n"
        "    updated_at BIGINT NOT NULL\n"
        + (")" + table_options("mysql") if dialect == "mysql" else ")")
    ]


# --------------------------------------------------------------------------- migrations


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...


class Connection(Protocol):
    def cursor(self) -> Any: ...


@dataclass
class MigrationContext:
    """What a migration step gets: a cursor inside the runner's transaction."""

    cur: Cursor
    dialect: Dialect
    table: str

    @property
    def ph(self) -> str:
        """The DB-API placeholder for this dialect's usual driver."""
        return "?" if self.dialect == "sqlite" else "%s"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.cur.execute(sql.replace("?", self.ph), params)

    def columns(self) -> set[str]:
        """Column names of the silo table; empty if the table does not exist."""
        if self.dialect == "sqlite":
            self.cur.execute(f"PRAGMA table_info({self.table})")
            return {str(r[1]) for r in self.cur.fetchall()}
        # Only this database/schema: a same-named table elsewhere is not ours.
        here = "DATABASE()" if self.dialect == "mysql" else "current_schema()"
        self.execute(
            "SELECT column_name FROM information_schema.columns"
            f" WHERE table_schema = {here} AND table_name = ?",
            (self.table,),
        )
        return {str(r[0]) for r in self.cur.fetchall()}

    def indexes(self) -> set[str]:
        if self.dialect == "sqlite":
            self.cur.execute(f"PRAGMA index_list({self.table})")
            return {str(r[1]) for r in self.cur.fetchall()}
        if self.dialect == "mysql":
            self.execute(
                "SELECT index_name FROM information_schema.statistics"
                " WHERE table_schema = DATABASE() AND table_name = ?",
                (self.table,),
            )
        else:
            self.execute(
                "SELECT indexname FROM pg_indexes"
                " WHERE schemaname = current_schema() AND tablename = ?",
                (self.table,),
            )
        return {str(r[0]) for r in self.cur.fetchall()}


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[MigrationContext], None]


def create_or_adopt(ctx: MigrationContext, create_sql: str, kamailio: Sequence[Column],
                    extra: Sequence[Column]) -> list[str]:
    """Create ``ctx.table`` with *create_sql*, or adopt the table Kamailio created by
    adding our *extra* columns.  Returns the Kamailio columns the existing table lacks
    (nothing was changed then: it is not Kamailio's table, the caller says so)."""
    existing = ctx.columns()
    if not existing:
        ctx.execute(create_sql)
        return []
    missing = [c.name for c in kamailio if c.name not in existing]
    if missing:
        return missing
    for col in extra:
        if col.name not in existing:
            ctx.execute(f"ALTER TABLE {ctx.table} ADD COLUMN {column_ddl(col, ctx.dialect)}")
    return []


def _v1_create(ctx: MigrationContext) -> None:
    """Create Kamailio's tables, or adopt a silo table Kamailio created, adding our columns."""
    ctx.execute(kamailio_version_table_sql(ctx.dialect))
    missing_k = create_or_adopt(ctx, create_table_sql(ctx.table, ctx.dialect),
                                KAMAILIO_COLUMNS, EXTRA_COLUMNS)
    if missing_k:
        raise MigrationError(
            f"table {ctx.table!r} exists but lacks Kamailio columns {missing_k}: "
            "not a Kamailio silo v8 table"
        )
    have = ctx.indexes()
    wanted = (account_index_name(ctx.table, ctx.dialect), expiry_index_name(ctx.table, ctx.dialect))
    for name, sql in zip(wanted, create_index_sql(ctx.table, ctx.dialect), strict=True):
        if name not in have:
            ctx.execute(sql)
    ctx.execute(
        f"SELECT table_version FROM {KAMAILIO_VERSION_TABLE} WHERE table_name = ?", (ctx.table,)
    )
    row = ctx.cur.fetchone()
    if row is None:
        ctx.execute(
            f"INSERT INTO {KAMAILIO_VERSION_TABLE} (table_name, table_version) VALUES (?, ?)",
            (ctx.table, KAMAILIO_TABLE_VERSION),
        )
    elif int(row[0]) != KAMAILIO_TABLE_VERSION:
        raise MigrationError(
            f"Kamailio version row for {ctx.table!r} is {row[0]}, expected {KAMAILIO_TABLE_VERSION}"
        )


def _v2_message_key(ctx: MigrationContext) -> None:
    """The msg_key column and its unique index, and the sender index.  Re-runnable
    (MySQL commits DDL at once): each part is added only if missing."""
    if "msg_key" not in ctx.columns():
        col = next(c for c in EXTRA_COLUMNS if c.name == "msg_key")
        ctx.execute(f"ALTER TABLE {ctx.table} ADD COLUMN {column_ddl(col, ctx.dialect)}")
    have = ctx.indexes()
    for name, sql in v2_index_sql(ctx.table, ctx.dialect):
        if name not in have:
            ctx.execute(sql)
_SQLITE_ID = re.compile(r"\bid\s+INTEGER\s+PRIMARY\s+KEY\b(?!\s+AUTOINCREMENT)", re.IGNORECASE)
_CREATE_HEAD = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:\"[^\"]+\"|\w+)",
                          re.IGNORECASE)


def _v3_sqlite_ids_never_reused(ctx: MigrationContext) -> None:
    """SQLite: rebuild a silo table without AUTOINCREMENT so that ids are never reused.

    Without it SQLite hands out max(id) + 1, so once the newest message is delivered
    its id comes back for the next one. MySQL (AUTO_INCREMENT) and PostgreSQL
    (SERIAL) never reuse ids. SQLite cannot change a column in place: the table is
    copied into one created from its own DDL plus AUTOINCREMENT (so every column,
    ours or Kamailio's, stays as it is), the indexes are recreated, and the sequence
    starts above the highest id present. Kamailio's SQL reads the table as before.
    """
    if ctx.dialect != "sqlite":
        return
    ctx.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (ctx.table,))
    row = ctx.cur.fetchone()
    ddl = str(row[0]) if row else ""
    if not _SQLITE_ID.search(ddl):
        return  # already AUTOINCREMENT (created so by step 1), or not ours to change
    ctx.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
                " AND sql IS NOT NULL", (ctx.table,))
    indexes = [str(r[0]) for r in ctx.cur.fetchall()]
    rebuilt = f"{ctx.table}_rebuild"
    ctx.execute(f"DROP TABLE IF EXISTS {rebuilt}")
    ctx.execute(_CREATE_HEAD.sub(f"CREATE TABLE {rebuilt}", _SQLITE_ID.sub(
        "id INTEGER PRIMARY KEY AUTOINCREMENT", ddl, count=1), count=1))
    ctx.execute(f"INSERT INTO {rebuilt} SELECT * FROM {ctx.table}")
    ctx.execute(f"DROP TABLE {ctx.table}")
    ctx.execute(f"ALTER TABLE {rebuilt} RENAME TO {ctx.table}")
    for sql in indexes:
        ctx.execute(sql)


def _v4_push_targets(ctx: MigrationContext) -> None:
    """The push-target table of push notifications (``sipsilo.push``)."""
    for sql in push_table_sql(ctx.table, ctx.dialect):
        ctx.execute(sql)


#: Ordered; append new steps here.  A step runs once, in the runner's transaction, and the
#: runner records its version in the same transaction.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create Kamailio silo v8 table plus delivery columns and indexes", _v1_create),
    Migration(2, "unique message key (idempotent store) and sender index", _v2_message_key),
    Migration(3, "SQLite: message ids are never reused (AUTOINCREMENT)",
              _v3_sqlite_ids_never_reused),
    Migration(4, "push targets: the last RFC 8599 push target of each AoR", _v4_push_targets),
)

LATEST_VERSION = MIGRATIONS[-1].version


def component_name(table: str) -> str:
    """Our version row's key; per table, because the table name is configurable."""
    return f"silo:{table}"


def _begin(dialect: Dialect) -> str:
    # IMMEDIATE takes SQLite's write lock before reading the version, so two processes
    # migrating at once run one after the other instead of both applying a step.
    # (MySQL commits implicitly around DDL: its steps must be written re-runnable, as v1 is,
    # and a MySQL runner should also take GET_LOCK() here; PostgreSQL DDL is transactional.)
    return "BEGIN IMMEDIATE" if dialect == "sqlite" else "BEGIN"


def current_version(cur: Cursor, dialect: Dialect, table: str) -> int:
    """Our schema version of *table*, 0 if never migrated (or no version table)."""
    ctx = MigrationContext(cur, dialect, table)
    try:
        ctx.execute(
            f"SELECT version FROM {SIPSILO_VERSION_TABLE} WHERE component = ?",
            (component_name(table),),
        )
    except Exception:  # the version table does not exist yet
        return 0
    row = cur.fetchone()
    return int(row[0]) if row else 0


def migrate(
    conn: Connection,
    dialect: Dialect,
    table: str,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> tuple[int, int]:
    """Apply pending migrations; return (version before, version after).  Idempotent.

    *conn* must be in autocommit mode; each step commits with its version row, so a
    crash between steps leaves a consistent, resumable state.
    """
    check_identifier(table)
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise MigrationError("migrations must have strictly increasing versions")
    latest = versions[-1] if versions else 0
    cur = conn.cursor()
    before = current_version(cur, dialect, table)
    if before > latest:
        raise MigrationError(
            f"database schema of {table!r} is version {before}, newer than this "
            f"sipsilo ({latest}); upgrade sipsilo"
        )
    comp = component_name(table)
    ctx = MigrationContext(cur, dialect, table)
    for m in migrations:
        if m.version <= before:  # applied already: no need to take the write lock
            continue
        cur.execute(_begin(dialect))
        try:
            ctx.execute(sipsilo_version_table_sql(dialect))
            now = current_version(cur, dialect, table)  # re-read under the lock
            if m.version <= now:
                cur.execute("ROLLBACK")
                continue
            m.apply(ctx)
            if now == 0:
                ctx.execute(
                    f"INSERT INTO {SIPSILO_VERSION_TABLE} (component, version) VALUES (?, ?)",
                    (comp, m.version),
                )
            else:
                ctx.execute(
                    f"UPDATE {SIPSILO_VERSION_TABLE} SET version = ? WHERE component = ?",
                    (m.version, comp),
                )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    return before, current_version(cur, dialect, table)

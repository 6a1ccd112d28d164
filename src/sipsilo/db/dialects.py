"""What differs between SQLite, MySQL/MariaDB and PostgreSQL in the SQL we write.

Store code is written once, with ``%s`` placeholders, and asks its :class:`Dialect` for
the few statements whose spelling differs.  Everything else (placeholder rewriting,
returning new ids, deadlock detection) is the connection's job (:mod:`.base`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .url import SqlDialect


@dataclass(frozen=True)
class Dialect:
    name: SqlDialect
    #: The driver's own placeholder: store code renders its fixed statements with it
    #: once, so the hot path rewrites nothing (asyncpg's ``$n`` is its Conn's business).
    mark: str

    def sql(self, text: str) -> str:
        """*text* written with ``%s``, in this dialect's placeholder."""
        return text if self.mark == "%s" else text.replace("%s", self.mark)

    def marks(self, n: int) -> str:
        """``%s, %s, ...`` for an ``IN`` list of *n* values."""
        return ", ".join([self.mark] * n)

    def delete_limited(self, table: str, where: str, limit: int) -> str:
        """Delete at most *limit* rows matching *where* (MySQL refuses LIMIT in an IN
        subquery but has DELETE ... LIMIT; the others the other way round)."""
        if self.name == "mysql":
            return f"DELETE FROM {table} WHERE {where} LIMIT {limit}"
        return (f"DELETE FROM {table} WHERE id IN"
                f" (SELECT id FROM {table} WHERE {where} LIMIT {limit})")

    def upsert(self, head: str, key: str, columns: Sequence[str]) -> str:
        """``INSERT ...`` (*head*) that replaces *columns* of the row with the same *key*."""
        if self.name == "mysql":
            return head + " ON DUPLICATE KEY UPDATE " + ", ".join(
                f"{c} = VALUES({c})" for c in columns)
        return head + f" ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in columns)

    def exact(self, columns: Sequence[str]) -> str:
        """``WHERE`` text matching *columns* equal to as many ``%s``, byte for byte.

        MySQL's default collations find ``'bob '`` and ``'BOB'`` equal to ``'bob'``; the
        binary comparison after the plain one (which keeps the index) rules that out.
        Arguments: the values once, and on MySQL once more (:meth:`exact_args`)."""
        clause = " AND ".join(f"{c} = %s" for c in columns)
        if self.name == "mysql":
            clause += "".join(f" AND CAST({c} AS BINARY) = CAST(%s AS BINARY)" for c in columns)
        return clause

    def exact_args(self, values: Sequence[object]) -> tuple[object, ...]:
        return tuple(values) * 2 if self.name == "mysql" else tuple(values)


DIALECTS: dict[SqlDialect, Dialect] = {
    "sqlite": Dialect("sqlite", "?"),
    "mysql": Dialect("mysql", "%s"),
    "postgresql": Dialect("postgresql", "%s"),
}

__all__ = ["DIALECTS", "Dialect"]

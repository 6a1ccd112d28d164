"""The errors every database user sees, whichever backend is behind it.

They are split by what the caller does next:

* :class:`StoreUnavailable`: the database cannot be reached (refused, lost connection,
  wrong password at runtime...).  Nothing is retried on another row; a route answers
  503 and the next operation tries a fresh connection, so a store heals by itself.
* :class:`StoreConflict`: deadlock or serialisation failure; :func:`~sipsilo.db.base.run_txn`
  re-runs the transaction.
* :class:`StoreDuplicate`: a unique key is taken (MySQL); the caller looks it up.
* :class:`StoreConfigError`: the configuration cannot work (bad URL, bad table name).
* plain :class:`StoreError`: the statement itself failed (data too long...).
"""

from __future__ import annotations


class StoreError(Exception):
    """A storage operation failed (I/O error, database locked for too long, closed store)."""


class StoreConfigError(StoreError):
    """The store cannot be set up as configured (bad db_url, unsupported backend)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached; a later call may succeed (pool reconnect)."""


class StoreConflict(StoreError):
    """Deadlock, serialisation failure or lock wait timeout: the transaction may be re-run."""


class StoreDuplicate(StoreError):
    """A row with the same unique key is stored already (MySQL's 1062); the caller
    that inserted optimistically looks the key up instead (the transaction lives on)."""


class MigrationError(Exception):
    """The schema cannot be created or upgraded as it is (or is newer than this sipsilo)."""


__all__ = ["MigrationError", "StoreConfigError", "StoreConflict", "StoreDuplicate",
           "StoreError", "StoreUnavailable"]

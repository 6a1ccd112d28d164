"""The database layer: URLs, pools, dialects, DDL and migrations.

Every SQL store of sipsilo (the message store in :mod:`sipsilo.silo`, the subscriber
table in :mod:`sipsilo.auth`, the location service in :mod:`sipsilo.registrar`) stands
on this package and on nothing of the others:

* :mod:`.url`: the one parser of ``db_url`` (:class:`DbUrl`), run at configuration load;
* :mod:`.errors`: ``StoreError`` and its kinds, the same for every backend;
* :mod:`.base`: the async ``Pool``/``Conn`` interface, ``run_txn``;
* :mod:`.sqlite`, :mod:`.mysql`, :mod:`.postgres`: the drivers; SQLite's writer thread
  (group commit) is its connection strategy for the message store;
* :mod:`.dialects`: the few statements spelled differently per database;
* :mod:`.schema`, :mod:`.migrate`: column descriptions, DDL per dialect, migrations.

Drivers are imported only when a URL asks for them.
"""

from __future__ import annotations

from .base import Conn, Pool, Row, open_pool, run_txn
from .errors import MigrationError, StoreConfigError, StoreConflict, StoreError, StoreUnavailable
from .url import DbUrl, SqlDialect, dialect_of, mask_url, parse_db_url

__all__ = ["Conn", "DbUrl", "MigrationError", "Pool", "Row", "SqlDialect", "StoreConfigError",
           "StoreConflict", "StoreError", "StoreUnavailable", "dialect_of", "mask_url",
           "open_pool", "parse_db_url", "run_txn"]

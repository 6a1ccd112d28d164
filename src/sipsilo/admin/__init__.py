"""What the ``sipsilo`` commands (and the HTTP admin API) do to the databases.

* :mod:`.silo`: ``silo list|show|delete|purge``, ``db init|migrate``,
  ``check-config --check-db``, and the figures of ``/metrics``;
* :mod:`.users`: ``user add|passwd|remove|list`` on the subscriber table.

Every function is synchronous, takes the loaded :class:`~sipsilo.config.Config`, and
opens its own short-lived connection, so it works while servers run on the same
database (SQLite: WAL lets it read beside the server, ``busy_timeout`` makes its writes
wait for the server's write lock instead of failing).  The SQL is the stores' own
(:mod:`sipsilo.silo.ops`, :mod:`sipsilo.auth.subscribers`).
"""

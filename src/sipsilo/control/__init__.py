"""A local control channel: `sipsilo location list` and `sipsilo stats` ask the
running server over a Unix socket in its data dir (one JSON line each way)."""

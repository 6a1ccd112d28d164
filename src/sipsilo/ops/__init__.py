"""Operating a running sipsilo: log output, metrics, readiness and SIGHUP reload.

Nothing here is on the SIP request path: the figures are read when someone asks
(a scrape, a probe, `sipsilo stats`), from counters the layers keep anyway.
"""

"""sipsilo performance harness: SIPp runs, log parsing, results (see bench/README.md)."""

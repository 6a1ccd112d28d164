"""`python -m sipsilo` is the `sipsilo` command."""

from sipsilo.cli import main

main()

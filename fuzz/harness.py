"""What every fuzz target shares: atheris set-up and the one invariant.

A target is ``def check(data: bytes) -> None``: it feeds the bytes to one
parser and asserts what must hold (a round trip where it applies). The only
exception allowed out of the code under test is the documented
:class:`sipsilo.sip.errors.ParseError` family -- anything else is a crash the
server would turn into a dropped datagram or a traceback, and atheris stops
on it and writes the input to ``crash-<sha1>``.

Run a target directly (libFuzzer flags are passed through), e.g.::

    python fuzz/fuzz_parser.py /tmp/corpus fuzz/corpus/parser -max_total_time=600

The first corpus directory receives the new inputs; keep the committed seed
corpus as a second, read-only one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

with atheris.instrument_imports():
    # the package imports every module the targets use, except digest
    import sipsilo.sip
    import sipsilo.sip.digest  # noqa: F401
    from sipsilo.sip.errors import ParseError


def text(data: bytes) -> str:
    """The input as header text. A request whose head is not UTF-8 is refused
    by the parser before any header is read (fuzz_parser.py covers that), so
    the header parsers only ever see valid text: bad bytes become U+FFFD."""
    return data.decode("utf-8", errors="replace")


def guarded(check: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """check(data), with ParseError (the documented rejection) swallowed."""

    def one(data: bytes) -> None:
        try:
            check(data)
        except ParseError as exc:
            assert 100 <= exc.status <= 699 and exc.reason, f"bad ParseError {exc!r}"

    return one


def main(check: Callable[[bytes], None]) -> None:
    args = list(sys.argv)
    if os.environ.get("FUZZ_REPLAY"):
        # replay files (a crash, the corpus) without atheris' loop, for debugging
        for name in args[1:]:
            guarded(check)(Path(name).read_bytes())
        return
    atheris.Setup(args, guarded(check))
    atheris.Fuzz()

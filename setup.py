"""Optional compiled core: the metadata is in pyproject.toml; this only adds extensions.

``SIPSILO_MYPYC=1 pip install .`` compiles the sans-IO core (``sipsilo.sip`` and
the transaction modules listed in CORE) with mypyc. Without the variable, or
when anything in the compilation fails (no C compiler, no Python headers, a
mypyc error), the build goes on with the pure-Python modules, which are always
installed and which the compiled ones only shadow; one line on stderr says so.
``sipsilo --version`` tells which core a process runs.

The transaction state machines (table.py, client.py, server.py) stay
interpreted: their tables name methods inside the class body, which mypyc does
not support.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
CORE = [
    "src/sipsilo/sip",
    "src/sipsilo/transaction/ack.py",
    "src/sipsilo/transaction/effects.py",
    "src/sipsilo/transaction/keys.py",
    "src/sipsilo/transaction/timers.py",
]


def _say(text: str) -> None:
    print(f"sipsilo: {text}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure-Python core instead of failing."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any failure means: no compiled core
            self._remove_partial()
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            _say(f"compiling the core failed ({reason}); installing the pure-Python core")

    def _remove_partial(self) -> None:
        # The modules share one runtime library: half a set would fail at import.
        for path in self.get_outputs():
            Path(path).unlink(missing_ok=True)


def _wanted() -> bool:
    return os.environ.get("SIPSILO_MYPYC", "").lower() in ("1", "yes", "true")


def _compiled_core() -> list[Extension]:
    if not _wanted():
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        # Also what the backend sees when it first asks for the build requirements
        # (mypy, below), before installing them.
        _say("mypyc is not importable; installing the pure-Python core")
        return []
    try:
        os.chdir(HERE)  # mypycify takes paths relative to the project
        return mypycify(CORE, opt_level="3")
    except Exception as exc:  # mypyc refusing: pure-Python core
        _say(f"not compiling the core ({exc}); installing the pure-Python core")
        return []


ext_modules = _compiled_core()
setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt},
    # Asked for by setuptools' build backend before the build: mypy, only when compiling.
    setup_requires=["mypy>=1.8"] if _wanted() else [],
)

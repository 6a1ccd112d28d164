"""The protocol package must stay free of I/O and concurrency machinery."""

from __future__ import annotations

import ast
import pathlib

import sipsilo.sip

FORBIDDEN = {"asyncio", "socket", "selectors", "threading"}
PACKAGE_DIR = pathlib.Path(sipsilo.sip.__file__).parent


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_every_module_is_checked() -> None:
    modules = list(PACKAGE_DIR.rglob("*.py"))
    assert len(modules) >= 10


def test_no_io_imports() -> None:
    offenders = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        bad = _imports(ast.parse(path.read_text(), str(path))) & FORBIDDEN
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_detector_catches_forbidden_imports() -> None:
    tree = ast.parse("import asyncio\nfrom socket import socket\nimport threading as t\n")
    assert _imports(tree) & FORBIDDEN == {"asyncio", "socket", "threading"}

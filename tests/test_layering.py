"""The package layering, held by the test suite rather than by convention.

* ``lint-imports`` checks the contracts in pyproject.toml (``[tool.importlinter]``):
  the core layers, the domain packages free of sockets and of each other, no
  cycles between packages.
* The "imports" column of docs/architecture.md's table is compared with the
  import graph of src/sipsilo, computed here with ``ast``: a row that says
  what the code no longer does, or a package without a row, fails.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
TABLE_DOC = ROOT / "docs" / "architecture.md"


def test_import_contracts_are_kept() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, "-c",
         "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    report = run.stdout[run.stdout.find("Contracts"):] + run.stderr
    assert run.returncode == 0, report
    assert "0 broken" in run.stdout, report


# ------------------------------------------------------------ the doc's table
def unit_of(module: str) -> str:
    """The table's name for a module: its top package under sipsilo, or the
    module itself when it sits at the top (``app``); ``sipsilo`` for __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "sipsilo"


def package_imports(src: Path = SRC) -> dict[str, set[str]]:
    """unit -> units its modules import (any depth: lazy and TYPE_CHECKING ones too)."""
    modules: dict[str, Path] = {}
    for path in sorted((src / "sipsilo").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        unit = unit_of(module)
        found = graph.setdefault(unit, set())
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # "from sipsilo import app" names a module; "import __version__" does not
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                         for a in node.names]
            for name in names:
                if name == "sipsilo" or name.startswith("sipsilo."):
                    target = unit_of(name)
                    if target != unit:
                        found.add(target)
    return graph


_ROW = re.compile(r"^\|(?P<cells>.*)\|\s*$")
_NAME = re.compile(r"`([A-Za-z_][\w.]*)`")


def documented() -> list[tuple[set[str], set[str]]]:
    """(packages of the row, the imports it states) for each row of the table."""
    lines = TABLE_DOC.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| package | role |"))
    columns = [c.strip() for c in lines[header].strip("|").split("|")]
    imports_col = columns.index("imports")
    rows = []
    for line in lines[header + 2:]:
        match = _ROW.match(line)
        if match is None:
            break
        cells = [c.strip() for c in match["cells"].split("|")]
        cell = cells[imports_col]
        stated = set(_NAME.findall(cell))
        assert stated or cell == "none", f"imports cell not a list of `names` or none: {cell!r}"
        rows.append((set(_NAME.findall(cells[0])), stated))
    return rows


def test_every_package_has_one_row() -> None:
    graph = package_imports()
    rows = [names for names, _ in documented()]
    listed = [name for names in rows for name in names]
    assert sorted(set(listed)) == sorted(listed), "a package has two rows"
    assert set(listed) == set(graph), (
        f"no row for {sorted(set(graph) - set(listed))}; "
        f"rows for no package: {sorted(set(listed) - set(graph))}")


def test_the_imports_column_is_what_the_code_imports() -> None:
    graph = package_imports()
    wrong = []
    for names, stated in documented():
        actual = set().union(*(graph.get(n, set()) for n in names)) - names
        if stated != actual:
            wrong.append(f"{', '.join(sorted(names))}: table says {sorted(stated)}, "
                         f"code imports {sorted(actual)} "
                         f"(missing {sorted(actual - stated)}, stale {sorted(stated - actual)})")
    assert wrong == [], "\n".join(wrong)


def test_the_graph_sees_lazy_relative_and_from_package_imports(tmp_path: Path) -> None:
    # The comparison is only as good as the graph: a package that imports
    # another only inside a function, relatively, or as "from sipsilo import
    # x" must still show the edge.
    pkg = tmp_path / "sipsilo"
    for name in ("a", "b", "c"):
        (pkg / name).mkdir(parents=True)
        (pkg / name / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "top.py").write_text("from sipsilo import __version__\nfrom sipsilo import a\n")
    (pkg / "a" / "x.py").write_text("def f():\n    from sipsilo.b import y\n")
    (pkg / "b" / "y.py").write_text("from ..c import z\nfrom . import w\n")
    (pkg / "c" / "z.py").write_text("import os\n")
    graph = package_imports(tmp_path)
    assert graph == {"sipsilo": set(), "a": {"b"}, "b": {"c"}, "c": set(),
                     "top": {"sipsilo", "a"}}

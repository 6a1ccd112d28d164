"""A tiny TOML writer for the effective configuration.

Only what the configuration holds: one level of ``[section]`` tables whose values
are strings, booleans, integers, floats and flat arrays of those. ``None`` means
"unset"; TOML has no null, so the key is written as a comment. The output is
read back by :func:`tomllib.loads` to the same values (a test checks that).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# TOML basic strings must escape '"', '\\' and control characters.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # repr keeps ".0", so a float reads back as a float
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def dump_sections(sections: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """Write ``{section: {key: value}}`` as TOML text."""
    lines: list[str] = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, table in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{toml_key(name)}]")
        for key, value in table.items():
            if value is None:
                lines.append(f"# {toml_key(key)} is unset")
            else:
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"

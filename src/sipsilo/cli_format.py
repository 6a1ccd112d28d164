"""How the admin commands print what they got: for people, or JSON for scripts.

A mapping prints as aligned `name  value` lines, a list of mappings as a
table (long values cut so a row stays on one line), anything else as text.
`sipsilo --json ...` prints one JSON document per item instead.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

CELL_MAX = 60


def to_plain(value: Any) -> Any:
    """JSON-friendly form: dataclasses as dicts, bytes as text (or base64)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in value]
    return value


def as_json(value: Any) -> str:
    return json.dumps(to_plain(value), ensure_ascii=False, default=str)


def _cell(value: Any, limit: int | None = CELL_MAX) -> str:
    if value is None:
        return "-"
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    text = text.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎")
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def as_text(value: Any) -> str:
    value = to_plain(value)
    if isinstance(value, Mapping):
        width = max((len(k) for k in value), default=0)
        return "\n".join(f"{k.ljust(width)}  {_cell(v, None)}" for k, v in value.items())
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        rows = list(value)
        if rows and all(isinstance(r, Mapping) for r in rows):
            return _table(rows)
        return "\n".join(as_text(r) for r in rows)
    return str(value)


def _table(rows: list[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(ts))) if ts else "-"


def message_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of `silo list` a person scans: who, for whom, when, what state."""
    row = to_plain(row)
    body = row.get("body") or ""
    claim = row.get("claim_owner")
    return {
        "id": row.get("id"),
        "for": f"{row.get('username')}@{row.get('domain')}",
        "from": row.get("src_addr"),
        "stored (UTC)": _when(row.get("inc_time")),
        "expires (UTC)": _when(row.get("exp_time")),
        "type": row.get("ctype"),
        "tries": row.get("attempts", 0),
        "claimed by": claim if claim else "-",
        "body": body,
    }

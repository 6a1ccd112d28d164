"""The README is the user's reference: every configuration key is in it."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from sipsilo.config import SECTIONS, Config

README = Path(__file__).resolve().parent.parent / "README.md"


def _documented_keys(text: str) -> set[str]:
    """section.key for each `key = ...` line under a `[section]` line of a toml block."""
    keys: set[str] = set()
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        section = None
        for line in block.splitlines():
            head = re.match(r"\s*\[(\w+)\]", line)
            if head:
                section = head.group(1)
                continue
            item = re.match(r"\s*(\w+)\s*=", line)
            if item and section:
                keys.add(f"{section}.{item.group(1)}")
    return keys


def test_every_configuration_key_is_documented_in_the_readme() -> None:
    documented = _documented_keys(README.read_text())
    missing = []
    for section in SECTIONS:
        model = Config.model_fields[section].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        missing += [f"{section}.{key}" for key in model.model_fields
                    if f"{section}.{key}" not in documented]
    assert not missing, f"configuration keys missing from README.md: {missing}"

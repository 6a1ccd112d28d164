"""The host part of a process's claim-owner name (app._host_name)."""

from __future__ import annotations

import socket

import pytest

from sipsilo import app


def test_long_host_names_that_differ_only_at_the_end_stay_apart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas of one deployment often have long names that share a long
    prefix; cut at 40 characters they would share one claim owner, take each
    other's claims back at start-up and deliver to one user at once."""
    base = "sipsilo-offline-messaging-production-statefulset"
    names = []
    for replica in ("0", "1"):
        monkeypatch.setattr(socket, "gethostname", lambda r=replica: f"{base}-{r}")
        names.append(app._host_name())
    assert names[0] != names[1] and all(len(n) == 40 for n in names)
    monkeypatch.setattr(socket, "gethostname", lambda: "pbx1")
    assert app._host_name() == "pbx1"  # a short name as it is

"""Which Contact addresses count as behind NAT (reached at the REGISTER's source)."""

from __future__ import annotations

import pytest

from sipsilo.routing.services import _behind_nat


@pytest.mark.parametrize("host", ["192.168.77.5", "10.1.2.3", "172.16.0.9", "100.64.1.1",
                                  "169.254.3.4", "fd00::5", "fe80::1", "127.0.0.2"])
def test_private_contacts_are_behind_nat(host: str) -> None:
    assert _behind_nat(host)


@pytest.mark.parametrize("host", ["8.8.8.8", "2001:4860:4860::8888", "sip.example.com"])
def test_public_contacts_are_taken_as_meant(host: str) -> None:
    assert not _behind_nat(host)

"""Issue "Registrar/proxy": REGISTER as a real client (SIPp) sees it, and the CLI view."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

import pytest

from tests.integration.harness import ServerProcess, free_port
from tests.integration.proxy_helpers import register
from tests.integration.sipwire import header, headers, status_line


def contact_expiry(reply: str, contact_uri: str) -> int | None:
    for value in headers(reply, "Contact"):
        for item in value.split(","):
            if f"<{contact_uri}>" in item:
                match = re.search(r";expires=(\d+)", item)
                return int(match.group(1)) if match else None
    return None


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_register_lists_binding_with_expires_and_date(
    server: ServerProcess, transport: str
) -> None:
    uri = f"sip:bob@127.0.0.1:{free_port()}"
    reply = register(server, contact=f"<{uri}>", expires=300, transport=transport)
    assert status_line(reply) == "SIP/2.0 200 OK"
    assert contact_expiry(reply, uri) == 300
    date = header(reply, "Date")
    assert date and date.endswith("GMT")
    parsedate_to_datetime(date)
    assert ";tag=" in (header(reply, "To") or "")


def test_reregister_refreshes_expiry(server: ServerProcess) -> None:
    uri = f"sip:bob@127.0.0.1:{free_port()}"
    first = register(server, contact=f"<{uri}>", expires=300, cseq=1)
    assert contact_expiry(first, uri) == 300
    refreshed = register(server, contact=f"<{uri}>;expires=120", expires=300, cseq=2)
    assert status_line(refreshed) == "SIP/2.0 200 OK"
    assert contact_expiry(refreshed, uri) == 120
    assert len([c for c in headers(refreshed, "Contact") if uri in c]) == 1


def test_unregister_with_expires_zero_param(server: ServerProcess) -> None:
    keep = f"sip:bob@127.0.0.1:{free_port()}"
    drop = f"sip:bob@127.0.0.1:{free_port({server.port})}"
    register(server, contact=f"<{keep}>", expires=300, cseq=1)
    both = register(server, contact=f"<{drop}>", expires=300, cseq=2)
    assert contact_expiry(both, keep) and contact_expiry(both, drop)
    after = register(server, contact=f"<{drop}>;expires=0", expires=300, cseq=3)
    assert status_line(after) == "SIP/2.0 200 OK"
    assert contact_expiry(after, drop) is None
    assert contact_expiry(after, keep) in (299, 300)


def test_unregister_all_with_wildcard(server: ServerProcess) -> None:
    register(server, contact=f"<sip:bob@127.0.0.1:{free_port()}>", expires=300, cseq=1)
    reply = register(server, contact="*", expires=0, cseq=2)
    assert status_line(reply) == "SIP/2.0 200 OK"
    assert headers(reply, "Contact") == []
    listing = server.cli("location", "list")
    assert "sip:bob@" not in listing.stdout, listing.stdout


def test_too_brief_expiry_gets_423_with_min_expires(server: ServerProcess) -> None:
    reply = register(server, contact=f"<sip:bob@127.0.0.1:{free_port()}>;expires=5",
                     expires=3600, expect=423)
    assert status_line(reply) == "SIP/2.0 423 Interval Too Brief"
    assert header(reply, "Min-Expires") == "60"
    assert "sip:bob@" not in server.cli("location", "list").stdout


def test_location_list_cli_shows_binding(server: ServerProcess) -> None:
    uri = f"sip:bob@127.0.0.1:{free_port()}"
    register(server, contact=f"<{uri}>", expires=300)
    listing = server.cli("location", "list")
    assert listing.returncode == 0, listing.stderr
    assert "sip:bob@127.0.0.1" in listing.stdout and uri in listing.stdout, listing.stdout
    one = server.cli("location", "list", f"sip:bob@127.0.0.1:{server.port}")
    assert one.returncode == 0 and uri in one.stdout, one.stdout + one.stderr

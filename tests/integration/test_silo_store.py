"""Storing: a MESSAGE for an offline user is kept exactly, and the sender hears
about it; what cannot be stored is refused with the status that says why."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import ServerProcess
from tests.integration.silo_helpers import register, send_message, start_ua, wait_for

REGISTRAR = "sip:registrar@127.0.0.1"
OFFLINE_TEXT = "User [{}] is offline. The message will be delivered when user goes online."
CPIM_BODY = (
    "From: <sip:alice@example.com>\n"
    "To: <sip:bob@example.com>\n"
    "DateTime: 2026-11-26T12:00:00Z\n"
    "NS: imdn <urn:ietf:params:imdn>\n"
    "imdn.Message-ID: 34jk324j\n"
    "\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "Grüße, Bob — ça va?\n"
)

MakeServer = Callable[..., ServerProcess]


def test_offline_message_is_stored_exactly_and_sender_notified(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.registrar": REGISTRAR, "msilo.expire_time": 3600,
                            "msilo.check_time": 1})
    notice_ua = start_ua(server, calls=1)
    register(server, notice_ua.port, "alice")  # the notice goes where the sender is registered
    before = int(time.time())
    result, log = send_message(
        server,
        body="Hällo Bob\n",
        headers="Content-Type: text/plain; charset=UTF-8\nX-Test-Id: e5\n"
                "Subject: lunch?\nExpires: 60\n",
        contact_port=notice_ua.port,
    )
    after = int(time.time())
    assert result.returncode == 0, result.stdout
    sent = next(e for e in log if e.sent)

    rows = server.rows()
    assert len(rows) == 1, "the offline notice must never be stored"
    row = rows[0]
    assert row["src_addr"] == f"sip:alice@{server.uri_host}"
    assert row["dst_addr"] == f"sip:bob@{server.uri_host}"
    assert (row["username"], row["domain"]) == ("bob", "127.0.0.1")
    assert before <= row["inc_time"] <= after
    assert row["exp_time"] == row["inc_time"] + 60  # min(expire_time, Expires)
    assert row["ctype"] == "text/plain"
    assert row["ctype_full"] == "text/plain; charset=UTF-8"
    assert row["body"] == sent.body and "Hällo".encode() in row["body"]
    assert "X-Test-Id: e5\r\n" in row["extra_hdrs"]
    assert "Subject: lunch?\r\n" in row["extra_hdrs"]

    # The notice reaches the sender's UA (its registered contact), from the registrar address.
    notice_ua.finish(10)
    notices = notice_ua.received()
    assert len(notices) == 1
    notice = notices[0]
    assert notice.start == f"MESSAGE sip:alice@127.0.0.1:{notice_ua.port} SIP/2.0"
    assert (notice.header("From") or "").startswith(f"<{REGISTRAR}>;tag=")
    assert notice.header("To") == f"<sip:alice@{server.uri_host}>"
    assert notice.header("Content-Type") == "text/plain"
    assert notice.header("Contact") == f"<{REGISTRAR}>;msilo=yes"
    assert notice.body == OFFLINE_TEXT.format(f"sip:bob@{server.uri_host}").encode()
    assert len(server.rows()) == 1


def test_expires_is_capped_by_expire_time(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.expire_time": 100})
    send_message(server, body="no expires\n")
    send_message(server, body="long expires\n", headers="Content-Type: text/plain\nExpires: 500\n")
    send_message(server, body="short expires\n", headers="Content-Type: text/plain\nExpires: 7\n")
    ttl = [r["exp_time"] - r["inc_time"] for r in server.rows()]
    assert ttl == [100, 100, 7]


def test_cpim_and_binary_bodies_are_byte_exact(make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server()
    result, log = send_message(server, body=CPIM_BODY, headers="Content-Type: message/cpim\n")
    assert result.returncode == 0, result.stdout
    cpim_sent = next(e for e in log if e.sent).body

    blob = bytes(b for b in range(1, 256) if b not in b"[]")  # every byte SIPp can carry
    blob_file = tmp_path / "blob.bin"
    blob_file.write_bytes(blob)
    result, log = send_message(server, body=f'[file name="{blob_file}"]',
                               headers="Content-Type: application/octet-stream\n")
    assert result.returncode == 0, result.stdout
    blob_sent = next(e for e in log if e.sent).body
    assert blob in blob_sent

    cpim, binary = server.rows()
    assert cpim["ctype"] == "message/cpim"  # Kamailio relabels it text/plain
    assert cpim["body"] == cpim_sent
    assert binary["ctype"] == "application/octet-stream"
    assert binary["body"] == blob_sent


def test_the_notice_goes_where_the_sender_is_registered_not_to_its_contact(
        make_server: MakeServer) -> None:
    server = make_server(**{"msilo.registrar": REGISTRAR, "msilo.use_contact": 0})
    registered_ua = start_ua(server, calls=1)
    contact_ua = start_ua(server, calls=1, timeout=3)
    register(server, registered_ua.port, "alice")
    result, _ = send_message(server, contact_port=contact_ua.port)
    assert result.returncode == 0, result.stdout
    registered_ua.finish(10)
    contact_ua.finish(10)
    notices = registered_ua.received()
    assert len(notices) == 1
    assert notices[0].start == f"MESSAGE sip:alice@127.0.0.1:{registered_ua.port} SIP/2.0"
    assert notices[0].body.startswith(b"User [sip:bob@")
    assert contact_ua.received() == []
    assert len(server.rows()) == 1


def test_notice_to_an_offline_local_sender_is_dropped_not_stored(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.registrar": REGISTRAR, "msilo.use_contact": 0})
    result, _ = send_message(server)  # From: sip:alice@<server>, alice is not registered
    assert result.returncode == 0, result.stdout
    time.sleep(0.5)  # the notice is sent after the 202; give it the chance to loop back
    rows = server.rows()
    assert [(r["username"], r["src_addr"]) for r in rows] == [
        ("bob", f"sip:alice@{server.uri_host}")
    ]


def test_message_from_the_registrar_address_is_not_stored(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.registrar": REGISTRAR})
    result, _ = send_message(server, from_uri=REGISTRAR, expect=480)
    assert result.returncode == 0, result.stdout
    assert server.rows() == []


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ("Content-Type: text/plain\n", "", 400),
        ("", "no type\n", 400),
        ("Content-Type: text\n", "bad type\n", 415),
        ("Content-Type: text/plain\n", "x" * 300 + "\n", 413),
        ("Content-Type: application/im-iscomposing+xml\n",
         '<?xml version="1.0"?><isComposing><state>active</state></isComposing>\n', 480),
    ],
    ids=["empty-body", "no-content-type", "bad-content-type", "too-large", "iscomposing"],
)
def test_unstorable_messages_are_refused(
    make_server: MakeServer, headers: str, body: str, status: int
) -> None:
    server = make_server(**{"msilo.max_body": 200})
    result, log = send_message(server, headers=headers, body=body, expect=status)
    assert result.returncode == 0, result.stdout
    reply = next(e for e in log if not e.sent)
    assert reply.status == status
    assert server.rows() == []


def test_full_mailbox_gets_486_with_a_reason(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.max_messages": 2})
    result, _ = send_message(server, calls=2, body="fits [call_number]\n")
    assert result.returncode == 0, result.stdout
    result, log = send_message(server, body="one too many\n", expect=486)
    assert result.returncode == 0, result.stdout
    reply = next(e for e in log if not e.sent)
    assert reply.start.startswith("SIP/2.0 486 ") and "full" in reply.start.lower()
    wait_for(lambda: len(server.rows()) == 2, 2)
    assert [r["body"] for r in server.rows()] == [b"fits 1\r\n", b"fits 2\r\n"]


def test_coded_body_keeps_its_content_encoding_and_no_prefix(
    make_server: MakeServer, tmp_path: Path
) -> None:
    server = make_server(**{"msilo.check_time": 1})
    gz = gzip.compress(b"compressed hello\n", mtime=0)
    gz_file = tmp_path / "body.gz"
    gz_file.write_bytes(gz)
    result, _ = send_message(server, body=f'[file name="{gz_file}"]',
                             headers="Content-Type: text/plain\nContent-Encoding: gzip\n")
    assert result.returncode == 0, result.stdout
    (row,) = server.rows()
    assert row["body"] == gz + b"\r\n"  # SIPp ends the body with CRLF
    assert "Content-Encoding: gzip\r\n" in row["extra_hdrs"]

    ua = start_ua(server, calls=1)
    register(server, ua.port)
    ua.finish(10)
    (got,) = ua.received()
    assert got.header("Content-Encoding") == "gzip"
    # Byte-exact, no "[Offline message ...]" in front of the compressed data.
    # (SIPp's log stops at the body's first NUL, so compare length and start.)
    assert got.header("Content-Length") == str(len(row["body"]))
    assert got.body.startswith(b"\x1f\x8b")

"""Delivery: stored messages reach the user who registers, in order, one at a
time, exactly once; a failed delivery keeps the message for the next REGISTER."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Callable
from email.utils import formatdate

from tests.integration.harness import ServerProcess, finish_sipp, free_port, run_sipp
from tests.integration.silo_helpers import (
    SipEntry,
    UserAgent,
    parse_log,
    register,
    send_message,
    start_burst,
    start_ua,
    stats,
    wait_for,
)

MakeServer = Callable[..., ServerProcess]


def _ctime(ts: int) -> str:
    """C ctime() in UTC, as msilo prints it: "Thu Nov  6 12:38:33 2026"."""
    return time.asctime(time.gmtime(ts))


def _store(server: ServerProcess, count: int, text: str = "message") -> list[dict[str, object]]:
    result, _ = send_message(server, calls=count, rate=50, body=f"{text} [call_number]\n")
    assert result.returncode == 0, result.stdout
    rows = [dict(r) for r in server.rows()]
    assert len(rows) == count
    return rows


def _answer_of(ua: UserAgent, request: SipEntry) -> SipEntry:
    call_id = request.header("Call-ID")
    return next(e for e in ua.entries()
                if e.sent and not e.is_request and e.header("Call-ID") == call_id)


def test_five_messages_delivered_in_order_one_at_a_time(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.check_time": 1})
    rows = _store(server, 5)
    ua = start_ua(server, calls=5, pause_ms=300, timeout=15)
    register(server, ua.port)
    ua.finish(20)
    assert ua.result is not None and ua.result.returncode == 0, ua.result
    got = ua.received()
    assert len(got) == 5

    for row, msg in zip(rows, got, strict=True):
        assert msg.start == f"MESSAGE sip:bob@127.0.0.1:{ua.port} SIP/2.0"
        assert msg.header("From").startswith(f"<{row['src_addr']}>;tag=")  # type: ignore[union-attr]
        assert msg.header("To") == f"<{row['dst_addr']}>"
        inc = int(row["inc_time"])  # type: ignore[call-overload]
        assert msg.header("Date") == formatdate(inc, usegmt=True)
        assert msg.body == f"[Offline message - {_ctime(inc)}] ".encode() + row["body"]  # type: ignore[operator]

    # One at a time: message n+1 arrives only after the UA answered message n.
    for prev, nxt in itertools.pairwise(got):
        assert nxt.at >= _answer_of(ua, prev).at, (prev.raw, nxt.raw)
    wait_for(lambda: server.rows() == [], 5)
    assert stats(server)["msilo:dumped_messages"] == 5


def test_add_date_off_delivers_the_body_unchanged(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.add_date": 0})
    rows = _store(server, 2)
    ua = start_ua(server, calls=2)
    register(server, ua.port)
    ua.finish(10)
    assert [m.body for m in ua.received()] == [r["body"] for r in rows]
    wait_for(lambda: server.rows() == [], 5)


def _delivered_after_retry(server: ServerProcess, row_id: int) -> None:
    ua = start_ua(server, calls=1)
    register(server, ua.port)
    ua.finish(10)
    got = ua.received()
    assert len(got) == 1 and got[0].body.endswith(b"message 1\r\n")
    wait_for(lambda: server.rows() == [], 5)


def test_rejected_delivery_keeps_the_row_for_the_next_register(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.check_time": 1})
    (row,) = _store(server, 1)
    ua = start_ua(server, calls=1, code=480, reason="Temporarily Unavailable")
    register(server, ua.port)
    ua.finish(10)
    assert len(ua.received()) == 1
    wait_for(lambda: stats(server)["msilo:failed_messages"] == 1, 5)
    rows = server.rows()
    assert [(r["id"], r["body"], r["inc_time"]) for r in rows] == [
        (row["id"], row["body"], row["inc_time"])
    ], "kept as it was, not re-stored"
    _delivered_after_retry(server, int(row["id"]))  # type: ignore[call-overload]


def test_unanswered_delivery_keeps_the_row_for_the_next_register(make_server: MakeServer) -> None:
    server = make_server(**{"tm.fr_timer": 2, "msilo.check_time": 1})
    (row,) = _store(server, 1)
    # A UA that takes longer than fr_timer to answer: the delivery times out.
    ua = start_ua(server, calls=1, pause_ms=4000, timeout=10)
    register(server, ua.port)
    wait_for(lambda: stats(server)["msilo:failed_messages"] == 1, 8)
    ua.finish(10)
    rows = server.rows()
    assert [(r["id"], r["body"]) for r in rows] == [(row["id"], row["body"])]
    _delivered_after_retry(server, int(row["id"]))  # type: ignore[call-overload]


def test_register_that_cannot_take_messages_gets_nothing(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.check_time": 1})
    _store(server, 1)
    variants: list[dict[str, object]] = [
        {"expires": 0},
        {"headers": "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\n"},
        {"contact_params": ';methods="INVITE"'},
    ]
    for variant in variants:
        ua = start_ua(server, calls=1, timeout=2)
        register(server, ua.port, **variant)  # type: ignore[arg-type]
        ua.finish(10)
        assert ua.received() == [], variant
        assert len(server.rows()) == 1
    # A REGISTER that can take them gets the message.
    ua = start_ua(server, calls=1)
    register(server, ua.port, headers="Allow: INVITE, MESSAGE\n")
    ua.finish(10)
    assert len(ua.received()) == 1
    wait_for(lambda: server.rows() == [], 5)


def test_online_ua_answering_415_has_the_message_stored(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.check_time": 1})
    ua = start_ua(server, calls=1, code=415, reason="Unsupported Media Type")
    register(server, ua.port)
    result, log = send_message(server, body="relayed first\n")
    assert result.returncode == 0, result.stdout
    assert [e.status for e in log if not e.sent] == [202]
    ua.finish(10)
    assert len(ua.received()) == 1
    rows = server.rows()
    assert len(rows) == 1
    assert (rows[0]["username"], rows[0]["domain"]) == ("bob", "127.0.0.1")
    assert rows[0]["body"] == b"relayed first\r\n"
    assert stats(server)["msilo:stored_messages"] == 1


def test_concurrent_registers_deliver_each_message_once(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.check_time": 1})
    count = 6
    _store(server, count)
    uas = [start_ua(server, calls=count, pause_ms=50, timeout=8) for _ in range(2)]
    regs: list[tuple[subprocess.Popen[str], int]] = []
    for ua in uas:
        port = free_port({server.port})
        proc = run_sipp("silo_uac_register", server, local_port=port, background=True, timeout=10,
                        keys={"user": "bob", "contact_port": ua.port, "expires": 60},
                        subst={"contact_params": "", "headers": ""})
        assert isinstance(proc, subprocess.Popen)
        regs.append((proc, port))
    for proc, port in regs:
        assert finish_sipp(proc, server, "silo_uac_register", port).returncode == 0

    def total() -> int:
        return sum(len(ua.received()) for ua in uas)

    wait_for(lambda: total() >= count and server.rows() == [], 8)
    time.sleep(1.0)  # anything duplicated would be on its way by now
    for ua in uas:
        ua.proc.terminate()
        ua.finish(5)
    bodies = [m.body for ua in uas for m in ua.received()]
    assert len(bodies) == count
    assert len(set(bodies)) == count
    assert stats(server)["msilo:dumped_messages"] == count


def test_permanently_rejected_message_does_not_block_the_rest(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.check_time": 1})
    rows = _store(server, 4)
    ua = start_ua(server, calls=4, code=415, reason="Unsupported Media Type",
                  scenario="silo_uas_message_first")
    register(server, ua.port)
    ua.finish(15)
    got = ua.received()
    assert [m.body.rsplit(b"] ", 1)[-1] for m in got] == [r["body"] for r in rows]
    # #1 kept (no 2xx), unclaimed; #2..#4 delivered and deleted
    wait_for(lambda: [r["id"] for r in server.rows()] == [rows[0]["id"]], 5)
    wait_for(lambda: server.rows()[0]["claim_owner"] is None, 5)
    st = stats(server)
    assert (st["msilo:failed_messages"], st["msilo:dumped_messages"]) == (1, 3)
    # retried at the next REGISTER
    ua = start_ua(server, calls=1)
    register(server, ua.port)
    ua.finish(10)
    assert [m.body.rsplit(b"] ", 1)[-1] for m in ua.received()] == [rows[0]["body"]]
    wait_for(lambda: server.rows() == [], 5)


def test_live_message_queues_behind_stored_ones(make_server: MakeServer) -> None:
    server = make_server(**{"msilo.check_time": 1})
    _store(server, 3, text="stored")
    ua = start_ua(server, calls=4, pause_ms=400, timeout=15)
    register(server, ua.port)
    wait_for(lambda: len(ua.received()) >= 1, 5)  # the dump is running
    result, log = send_message(server, body="LIVE\n")
    assert result.returncode == 0, result.stdout
    assert [e.status for e in log if not e.sent and e.status >= 200] == [202]
    ua.finish(20)
    bodies = [m.body.rsplit(b"] ", 1)[-1] for m in ua.received()]
    assert bodies == [b"stored 1\r\n", b"stored 2\r\n", b"stored 3\r\n", b"LIVE\r\n"]
    wait_for(lambda: server.rows() == [], 5)


def test_sigterm_during_a_slow_dump_keeps_the_answered_message_delivered(
    make_server: MakeServer,
) -> None:
    server = make_server(**{"msilo.check_time": 1})
    rows = _store(server, 2)
    ua = start_ua(server, calls=2, pause_ms=1000, timeout=10)
    register(server, ua.port)
    wait_for(lambda: len(ua.received()) == 1, 5)
    assert server.stop() == 0  # SIGTERM while the UA holds back its 200
    ua.proc.terminate()
    ua.finish(5)
    assert ua.entries() and any(e.sent and e.status == 200 for e in ua.entries())
    left = server.rows()
    assert [r["id"] for r in left] == [rows[1]["id"]], "the answered one is not sent again"
    assert left[0]["claim_owner"] is None


def test_sigterm_after_a_burst_every_202_is_stored_once(make_server: MakeServer) -> None:
    server = make_server()
    proc, port = start_burst(server, calls=200, rate=400, timeout=8)
    wait_for(lambda: len(_rows_quiet(server)) >= 20, 10, 0.005)
    assert server.stop() == 0
    finish_sipp(proc, server, "silo_uac_message", port, timeout=30)
    log = parse_log((server.data_dir / f"silo_uac_message.{port}.msg.log").read_bytes())
    accepted = {e.header("Call-ID") for e in log if not e.sent and e.status == 202}
    stored = [r["callid"] for r in server.rows()]
    assert len(stored) == len(set(stored)), "stored twice"
    assert set(stored) == accepted, "a 202 without its row, or a row without its 202"


def _rows_quiet(server: ServerProcess) -> list[object]:
    try:
        return list(server.rows("select id from silo"))
    except Exception:
        return []


def test_a_message_too_large_for_udp_does_not_hold_back_the_rest(
    make_server: MakeServer,
) -> None:
    # Accepted (it fits one datagram on its way in), but with the offline
    # prefix and our headers it no longer fits one on its way out to a UDP
    # contact: that is permanent (513), so the dump skips it and goes on
    # instead of ending at it at every REGISTER until it expires.
    from tests.integration.sipwire import status_line, udp_exchange

    server = make_server()

    def head(length: int) -> bytes:
        return (
            f"MESSAGE sip:bob@{server.uri_host} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK-big-1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=big\r\n"
            f"To: <sip:bob@{server.uri_host}>\r\nCall-ID: big-1@127.0.0.1\r\n"
            f"CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n\r\n"
        ).encode()

    size = 65507 - len(head(60000))  # the largest datagram there is
    big = head(size) + b"x" * size
    answer = udp_exchange(server.port, big, wait=3.0)
    assert answer is not None and status_line(answer).startswith("SIP/2.0 202")
    result, _ = send_message(server, body="small [call_number]\n")
    assert result.returncode == 0, result.stdout
    ua = start_ua(server, calls=1)
    register(server, ua.port)
    ua.finish(15)
    got = ua.received()
    assert len(got) == 1 and got[0].body.endswith(b"small 1\r\n")
    # The delivered row goes once its 200 is in, a moment after the phone sent it.
    wait_for(lambda: len(server.rows()) == 1)
    rows = server.rows()
    assert len(rows) == 1 and len(rows[0]["body"]) == size  # kept, not lost
    wait_for(lambda: "Message Too Large" in server.log())

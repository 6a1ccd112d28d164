"""Issue "Registrar/proxy": MESSAGE relayed between real clients (SIPp alice and bob).

Over UDP bob registers a Contact and listens there as a SIPp UAS. Over TCP bob
registers and then waits on the same connection: his Contact names a port
nobody listens on, so the MESSAGE can only reach him over that connection.
(SIPp maps a request to a running scenario by Call-ID, so alice and bob share
one through -cid_str; a real UA takes any Call-ID.)
"""

from __future__ import annotations

import pytest

from tests.integration.harness import ServerProcess, SippResult, free_port, run_sipp
from tests.integration.proxy_helpers import Sipp, register, wait_registered
from tests.integration.sipwire import header, headers, status_line, traced


def send_message(server: ServerProcess, *, to: str = "bob", text: str = "hello bob",
                 expect: int = 200, transport: str = "udp", max_forwards: int = 70,
                 call_id: str | None = None) -> str:
    extra = ["-cid_str", call_id] if call_id else None
    result = run_sipp("uac_message", server, transport=transport, timeout=8,
                      keys={"ruser": to, "from_user": "alice", "text": text,
                            "max_forwards": max_forwards},
                      subst={"expect": expect}, extra=extra)
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.stdout + result.messages + server.log()[-3000:]
    return result.received()[-1]


def start_udp_bob(server: ServerProcess, reply: str) -> Sipp:
    """bob: a SIPp UAS on its own port answering one MESSAGE with reply, registered there."""
    bob_port = free_port({server.port})
    bob = Sipp("uas_message", server, bob_port, timeout=10, subst={"reply": reply})
    register(server, contact=f"<sip:bob@127.0.0.1:{bob_port}>", expires=300)
    return bob


def received_message(bob: SippResult) -> str:
    messages = [m for m in traced(bob.messages) if m.startswith("MESSAGE ")]
    assert len(messages) == 1, bob.messages
    return messages[0]


def test_message_relayed_to_registered_bob_over_udp(server: ServerProcess) -> None:
    bob = start_udp_bob(server, "200 OK")
    reply = send_message(server, text="hello bob over udp")
    bob_run = bob.finish()
    assert bob_run.returncode == 0, bob_run.stdout
    assert status_line(reply) == "SIP/2.0 200 OK"
    assert len(headers(reply, "Via")) == 1, "the proxy's own Via must be removed"
    message = received_message(bob_run)
    assert message.startswith(f"MESSAGE sip:bob@127.0.0.1:{bob.local_port} SIP/2.0")
    assert message.rstrip().endswith("hello bob over udp")
    assert header(message, "Max-Forwards") == "69"
    vias = headers(message, "Via")
    assert len(vias) == 2 and f"127.0.0.1:{server.port}" in vias[0]
    assert server.rows() == [], "a delivered MESSAGE is not stored"


def test_message_relayed_over_bobs_tcp_connection(server: ServerProcess) -> None:
    call_id = f"tcp-msg-{free_port()}@127.0.0.1"
    nobody_listens = free_port({server.port})
    contact = f"<sip:bob@127.0.0.1:{nobody_listens};transport=tcp>"
    bob = Sipp("uac_register_then_message", server, free_port({server.port}), timeout=10,
               transport="tcp", keys={"user": "bob", "contact": contact},
               extra=["-cid_str", call_id])
    wait_registered(server, f"127.0.0.1:{nobody_listens}")
    reply = send_message(server, text="hello bob over tcp", transport="tcp", call_id=call_id)
    bob_run = bob.finish()
    assert bob_run.returncode == 0, bob_run.stdout + server.log()[-3000:]
    assert status_line(reply) == "SIP/2.0 200 OK"
    message = received_message(bob_run)
    assert message.rstrip().endswith("hello bob over tcp")
    assert "SIP/2.0/TCP" in headers(message, "Via")[0]
    assert server.rows() == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_to_unknown_user_gets_404(server: ServerProcess, transport: str) -> None:
    result = run_sipp("uac_options", server, transport=transport, timeout=5,
                      keys={"ruser_at": "nobody@", "max_forwards": 70}, subst={"expect": 404})
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.stdout
    assert status_line(result.received()[-1]) == "SIP/2.0 404 Not Found"


def test_max_forwards_zero_to_registered_user_gets_483(server: ServerProcess) -> None:
    register(server, contact=f"<sip:bob@127.0.0.1:{free_port()}>", expires=300)
    reply = send_message(server, max_forwards=0, expect=483)
    assert status_line(reply) == "SIP/2.0 483 Too Many Hops"
    assert server.rows() == []


@pytest.mark.parametrize("refusal", ["480 Temporarily Unavailable", "415 Unsupported Media Type"])
def test_message_refused_by_bob_is_stored_and_alice_gets_202(
    server: ServerProcess, refusal: str
) -> None:
    bob = start_udp_bob(server, refusal)
    reply = send_message(server, text="keep this for bob", expect=202)
    bob_run = bob.finish()
    assert bob_run.returncode == 0, bob_run.stdout
    assert status_line(reply) == "SIP/2.0 202 Accepted"
    rows = server.rows()
    assert len(rows) == 1
    assert rows[0]["username"] == "bob" and bytes(rows[0]["body"]).strip() == b"keep this for bob"


def test_message_for_offline_bob_is_stored_with_202(server: ServerProcess) -> None:
    reply = send_message(server, text="while you were out", expect=202)
    assert status_line(reply) == "SIP/2.0 202 Accepted"
    rows = server.rows()
    stored = [(r["username"], bytes(r["body"]).strip()) for r in rows]
    assert stored == [("bob", b"while you were out")]

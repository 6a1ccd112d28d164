"""Issue "Registrar/proxy": an INVITE/ACK/BYE call relayed between SIPp alice and bob.

The server Record-Routes the INVITE (`;lr`), so alice's ACK and BYE come back
through it with a Route header and reach bob with the proxy's Via on top.
"""

from __future__ import annotations

import re

from tests.integration.harness import ServerProcess, SippResult, free_port, run_sipp
from tests.integration.proxy_helpers import Sipp, register, wait_registered
from tests.integration.sipwire import header, headers, status_line, traced


def call_bob(server: ServerProcess, *, transport: str = "udp",
             call_id: str | None = None) -> SippResult:
    extra = ["-cid_str", call_id] if call_id else None
    result = run_sipp("uac_call", server, transport=transport, timeout=10,
                      keys={"ruser": "bob"}, extra=extra)
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.stdout + result.messages + server.log()[-3000:]
    return result


def requests_seen(run: SippResult) -> dict[str, str]:
    return {m.split(" ", 1)[0]: m for m in traced(run.messages) if not m.startswith("SIP/")}


def assert_call_went_through_proxy(alice: SippResult, bob: SippResult, server: ServerProcess,
                                   record_route: str) -> None:
    answered = [m for m in traced(alice.messages) if m.startswith("SIP/2.0 200")]
    # Our Record-Route carries a dialog token (sr=...): only such a Route set
    # is relayed for in-dialog requests. The callee's ("d") and the caller's
    # ("u", rewritten into the responses) differ: each binds its direction.
    def signed(direction: str) -> re.Pattern[str]:
        token = rf"{direction}[0-9a-f]+\.[0-9a-f]{{20}}"
        return re.compile(re.escape(record_route[:-1]) + f";sr={token}>")

    rr = headers(answered[0], "Record-Route")
    assert len(rr) == 1 and signed("u").fullmatch(rr[0]), rr
    seen = requests_seen(bob)
    assert set(seen) == {"INVITE", "ACK", "BYE"}, bob.messages
    callee_rr = headers(seen["INVITE"], "Record-Route")
    assert len(callee_rr) == 1 and signed("d").fullmatch(callee_rr[0]), callee_rr
    for method in ("ACK", "BYE"):
        vias = headers(seen[method], "Via")
        assert f"127.0.0.1:{server.port}" in vias[0], f"{method} bypassed the proxy"
        assert header(seen[method], "Route") is None, "the proxy removes its own Route"
    bye_answers = [m for m in traced(alice.messages) if "CSeq: 2 BYE" in m]
    assert bye_answers and status_line(bye_answers[0]) == "SIP/2.0 200 OK"


def test_call_relayed_over_udp(server: ServerProcess) -> None:
    bob_port = free_port({server.port})
    bob = Sipp("uas_call", server, bob_port, timeout=10)
    register(server, contact=f"<sip:bob@127.0.0.1:{bob_port}>", expires=300)
    alice = call_bob(server)
    bob_run = bob.finish()
    assert bob_run.returncode == 0, bob_run.stdout + bob_run.messages
    assert_call_went_through_proxy(alice, bob_run, server, f"<sip:127.0.0.1:{server.port};lr>")


def test_call_relayed_over_tcp(server: ServerProcess) -> None:
    call_id = f"tcp-call-{free_port()}@127.0.0.1"
    bob_port = free_port({server.port})
    contact = f"<sip:bob@127.0.0.1:{bob_port};transport=tcp>"
    bob = Sipp("uac_register_then_call", server, bob_port, timeout=10, transport="tcp",
               keys={"user": "bob", "contact": contact}, extra=["-cid_str", call_id])
    wait_registered(server, f"127.0.0.1:{bob_port}")
    alice = call_bob(server, transport="tcp", call_id=call_id)
    bob_run = bob.finish()
    assert bob_run.returncode == 0, bob_run.stdout + bob_run.messages
    assert_call_went_through_proxy(
        alice, bob_run, server, f"<sip:127.0.0.1:{server.port};transport=tcp;lr>"
    )


def test_invite_rejected_by_bob_480_is_relayed(server: ServerProcess) -> None:
    bob_port = free_port({server.port})
    bob = Sipp("uas_reject_invite", server, bob_port, timeout=10,
               subst={"reply": "480 Temporarily Unavailable"})
    register(server, contact=f"<sip:bob@127.0.0.1:{bob_port}>", expires=300)
    alice = run_sipp("uac_invite_rejected", server, timeout=10, keys={"ruser": "bob"},
                     subst={"expect": 480})
    assert isinstance(alice, SippResult)
    assert alice.returncode == 0, alice.stdout + alice.messages
    bob_run = bob.finish()
    assert bob_run.returncode == 0, bob_run.stdout + bob_run.messages
    final = traced(alice.messages)[-1]
    assert status_line(final) == "SIP/2.0 480 Temporarily Unavailable"
    assert len(headers(final, "Via")) == 1
    assert server.rows() == [], "only MESSAGEs are stored"

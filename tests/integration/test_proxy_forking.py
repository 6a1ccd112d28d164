"""Relay behaviour seen from raw-socket UAs: timer C, parallel non-INVITE
forking, NAT'd contacts and stray responses (real server process)."""

from __future__ import annotations

import socket
import time

from tests.integration.harness import ServerProcess
from tests.integration.sipwire import header, headers, status_line


class Ua:
    """A UDP socket speaking hand-written SIP."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def send(self, server: ServerProcess, text: str) -> None:
        self.sock.sendto(text.replace("\n", "\r\n").encode(), ("127.0.0.1", server.port))

    def reply(self, request: str, status: str, to_tag: str = "bobtag",
              extra: str = "") -> bytes:
        lines = [f"SIP/2.0 {status}"]
        for name in ("Via", "Record-Route"):
            lines += [f"{name}: {v}" for v in headers(request, name)]
        to = header(request, "To") or ""
        lines += [f"From: {header(request, 'From')}",
                  f"To: {to}{'' if 'tag=' in to else ';tag=' + to_tag}",
                  f"Call-ID: {header(request, 'Call-ID')}", f"CSeq: {header(request, 'CSeq')}"]
        if extra:
            lines.append(extra)
        lines.append("Content-Length: 0")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        top = headers(request, "Via")[0]
        rport = top.split("rport=")[1].split(";")[0] if "rport=" in top else None
        hostport = top.split()[1].split(";")[0]
        host, _, port = hostport.rpartition(":")
        self.sock.sendto(data, (host, int(rport or port)))
        return data

    def recv_all(self, seconds: float) -> list[str]:
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                out.append(self.sock.recv(65535).decode(errors="replace"))
            except TimeoutError:
                break
        return out

    def wait_for(self, pred: object, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                msg = self.sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                break
            seen.append(status_line(msg))
            if pred(msg):  # type: ignore[operator]
                return msg
        raise AssertionError(f"not received; saw {seen}")


def register(server: ServerProcess, ua: Ua, contacts: list[str], user: str = "bob") -> None:
    lines = [
        f"REGISTER sip:127.0.0.1:{server.port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};rport;branch=z9hG4bK-reg-{ua.port}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@127.0.0.1:{server.port}>;tag=r1",
        f"To: <sip:{user}@127.0.0.1:{server.port}>",
        f"Call-ID: reg-{ua.port}@127.0.0.1", "CSeq: 1 REGISTER",
        *[f"Contact: <{c}>;expires=300" for c in contacts],
        "Content-Length: 0",
    ]
    ua.send(server, "\n".join(lines) + "\n\n")
    answer = ua.wait_for(lambda m: m.startswith("SIP/2.0 ") and "REGISTER" in m, 3)
    assert status_line(answer) == "SIP/2.0 200 OK", answer


def request(server: ServerProcess, ua: Ua, method: str, call_id: str, body: str = "",
            user: str = "bob") -> str:
    lines = [
        f"{method} sip:{user}@127.0.0.1:{server.port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};rport;branch=z9hG4bK-{call_id}",
        "Max-Forwards: 70",
        f"From: <sip:alice@127.0.0.1:{server.port}>;tag=a1",
        f"To: <sip:{user}@127.0.0.1:{server.port}>",
        f"Call-ID: {call_id}", f"CSeq: 1 {method}",
        f"Contact: <sip:alice@127.0.0.1:{ua.port}>",
    ]
    if body:
        lines += ["Content-Type: text/plain", f"Content-Length: {len(body)}"]
    else:
        lines.append("Content-Length: 0")
    text = "\n".join(lines) + "\n\n" + body
    ua.send(server, text)
    return text


def is_request(method: str) -> object:
    return lambda m: m.startswith(f"{method} ")


def test_timer_c_cancels_the_branch_and_a_late_2xx_is_acked_and_byed(
    make_server: object,
) -> None:
    server = make_server(**{"tm.fr_inv_timer": 1, "tm.fr_timer": 4})  # type: ignore[operator]
    alice, bob = Ua(), Ua()
    try:
        register(server, bob, [f"sip:bob@127.0.0.1:{bob.port}"])
        request(server, alice, "INVITE", "timer-c")
        invite = bob.wait_for(is_request("INVITE"), 3)
        bob.reply(invite, "180 Ringing")
        # fr_inv_timer: alice gets 408 and bob a CANCEL
        final = alice.wait_for(lambda m: m.startswith("SIP/2.0 ") and int(m[8:11]) >= 200, 4)
        assert status_line(final).startswith("SIP/2.0 408"), final
        cancel = bob.wait_for(is_request("CANCEL"), 3)
        assert headers(cancel, "Via")[0] == headers(invite, "Via")[0]
        # bob answers anyway: the 200 must not reach alice; the proxy ACKs and BYEs it
        bob.reply(cancel, "200 OK")
        bob.reply(invite, "200 OK", extra=f"Contact: <sip:bob@127.0.0.1:{bob.port}>")
        ack = bob.wait_for(is_request("ACK"), 3)
        assert "bobtag" in (header(ack, "To") or "")
        bye = bob.wait_for(is_request("BYE"), 3)
        bob.reply(bye, "200 OK")
        late = [m for m in alice.recv_all(1.0) if m.startswith("SIP/2.0 200")]
        assert late == [], "alice got a 200 after her 408"
    finally:
        alice.close()
        bob.close()


def test_cancel_waits_for_a_provisional_on_the_branch(make_server: object) -> None:
    server = make_server()  # type: ignore[operator]
    alice, bob = Ua(), Ua()
    try:
        register(server, bob, [f"sip:bob@127.0.0.1:{bob.port}"])
        text = request(server, alice, "INVITE", "early-cancel")
        invite = bob.wait_for(is_request("INVITE"), 3)
        cancel = text.replace("INVITE sip:", "CANCEL sip:", 1).replace("1 INVITE", "1 CANCEL")
        alice.send(server, cancel)
        alice.wait_for(lambda m: "CANCEL" in (header(m, "CSeq") or ""), 3)
        # No provisional from bob yet: no CANCEL may come (§9.1), only retransmissions.
        early = [m for m in bob.recv_all(1.0) if m.startswith("CANCEL ")]
        assert early == [], "CANCEL sent before any provisional"
        bob.reply(invite, "180 Ringing")
        got = bob.wait_for(is_request("CANCEL"), 3)
        bob.reply(got, "200 OK")
        bob.reply(invite, "487 Request Terminated")
        final = alice.wait_for(lambda m: m.startswith("SIP/2.0 487"), 3)
        assert "INVITE" in (header(final, "CSeq") or "")
    finally:
        alice.close()
        bob.close()


def test_message_forks_in_parallel_within_fr_timer(make_server: object) -> None:
    server = make_server(**{"tm.fr_timer": 2})  # type: ignore[operator]
    alice, bob, dead = Ua(), Ua(), [Ua() for _ in range(3)]
    for ua in dead:
        ua.close()  # stale bindings: nobody listens there any more
    try:
        contacts = [f"sip:bob@127.0.0.1:{ua.port}" for ua in dead]
        register(server, bob, [*contacts, f"sip:bob@127.0.0.1:{bob.port};x=live"])
        register(server, bob, contacts, user="carol")
        time.sleep(0.5)  # the (empty) dumps the REGISTERs started are over
        started = time.monotonic()
        request(server, alice, "MESSAGE", "fork-msg", body="hi")
        message = bob.wait_for(is_request("MESSAGE"), 1.5)
        bob.reply(message, "200 OK")
        final = alice.wait_for(lambda m: m.startswith("SIP/2.0 ") and int(m[8:11]) >= 200, 3)
        assert status_line(final) == "SIP/2.0 200 OK"
        assert time.monotonic() - started < 1.5, "a live device answered at once"
        # all stale: the whole relay (and the storing) ends within fr_timer
        started = time.monotonic()
        request(server, alice, "MESSAGE", "fork-msg-2", body="again", user="carol")
        final = alice.wait_for(lambda m: m.startswith("SIP/2.0 ") and int(m[8:11]) >= 200, 6)
        assert time.monotonic() - started < 3.5, "serial forking outlasted fr_timer"
        assert status_line(final) == "SIP/2.0 202 Accepted", final
    finally:
        alice.close()
        bob.close()


def test_udp_contact_behind_nat_is_reached_at_the_source_address(make_server: object) -> None:
    server = make_server()  # type: ignore[operator]
    alice, bob = Ua(), Ua()
    try:
        register(server, bob, ["sip:bob@192.168.77.5:5060"])  # a private, unreachable Contact
        time.sleep(0.5)  # the (empty) dump the REGISTER started is over
        request(server, alice, "MESSAGE", "nat-msg", body="through the NAT")
        message = bob.wait_for(is_request("MESSAGE"), 3)
        assert message.startswith("MESSAGE sip:bob@192.168.77.5:5060 "), "R-URI stays the Contact"
        bob.reply(message, "200 OK")
        final = alice.wait_for(lambda m: m.startswith("SIP/2.0 ") and int(m[8:11]) >= 200, 3)
        assert status_line(final) == "SIP/2.0 200 OK"
    finally:
        alice.close()
        bob.close()


def test_stray_responses_are_not_reflected(server: ServerProcess) -> None:
    sender, victim = Ua(), Ua()
    try:
        for status, method in (("200 OK", "INVITE"), ("180 Ringing", "INVITE"),
                               ("200 OK", "MESSAGE")):
            sender.send(server, "\n".join([
                f"SIP/2.0 {status}",
                f"Via: SIP/2.0/UDP 127.0.0.1:{server.port};branch=z9hG4bK-forged",
                f"Via: SIP/2.0/UDP 127.0.0.1:{victim.port};branch=z9hG4bK-victim",
                "From: <sip:a@127.0.0.1>;tag=1", "To: <sip:b@127.0.0.1>;tag=2",
                "Call-ID: stray@127.0.0.1", f"CSeq: 1 {method}", "Content-Length: 0",
            ]) + "\n\n")
        assert victim.recv_all(1.0) == []
    finally:
        sender.close()
        victim.close()

"""Attacks from issue 11 replayed against a real server: a lifted Record-Route
token, spoofed identities and the offline notice as a reflector.

Every attacker is a raw UDP socket on loopback; the "foreign host" a relay must
not reach is 127.0.0.2, an address the server does not serve.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sipsilo.sip.digest import Credentials, ha1, parse_challenge, request_digest
from tests.integration.harness import ServerProcess
from tests.integration.sipwire import RawUA, header, headers, reply_to, status_line
from tests.integration.test_auth import Client, auth_server, status

Make = Callable[..., ServerProcess]
HOST = "127.0.0.1"
FOREIGN = "127.0.0.2"  # loopback too, but not a host the server serves


@contextmanager
def foreign_host() -> Iterator[socket.socket]:
    """A UDP socket on a host the server does not serve (the relay victim)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((FOREIGN, 0))
    except OSError:
        sock.close()
        pytest.skip(f"{FOREIGN} is not usable on this machine")
    sock.settimeout(1.5)
    try:
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> str | None:
    try:
        return sock.recv(65535).decode(errors="replace")
    except TimeoutError:
        return None


def registered_bob(server: ServerProcess) -> Client:
    """bob, registered with his password, reachable on the returned client's socket."""
    bob = Client(server)
    first = bob.send("REGISTER", "bob")
    ok = bob.send("REGISTER", "bob", auth=bob.credentials(first, "REGISTER", "bob", "secret"))
    assert status(ok) == 200, ok
    return bob


def bob_receives(bob: Client, method: str) -> tuple[str, tuple[str, int]] | None:
    bob.sock.settimeout(1.5)
    while True:
        try:
            data, addr = bob.sock.recvfrom(65535)
        except TimeoutError:
            return None
        text = data.decode(errors="replace")
        if text.startswith(f"{method} "):
            return text, addr


def early_dialog(server: ServerProcess, mallory: RawUA, bob: Client, call_id: str
                 ) -> tuple[str, tuple[str, int], str]:
    """A stranger's INVITE rings bob: (the INVITE bob got, its source, the 180 mallory got)."""
    srv = server.uri_host
    mallory.send_request(f"INVITE sip:bob@{srv} SIP/2.0", [
        "From: <sip:mallory@evil.invalid>;tag=m1", f"To: <sip:bob@{srv}>",
        f"Call-ID: {call_id}", "CSeq: 1 INVITE", f"Contact: <sip:mallory@{HOST}:{mallory.port}>"])
    got = bob_receives(bob, "INVITE")
    assert got is not None, server.log()[-3000:]
    invite, addr = got
    reply_to(bob.sock, invite, addr, "180 Ringing",
                [f"Contact: <sip:bob@{HOST}:{bob.port}>"], to_tag="b1")
    while True:
        answer = mallory.recv(3)
        assert answer is not None, "no 180 for the stranger"
        if answer[0].startswith("SIP/2.0 180"):
            return invite, addr, answer[0]


def in_dialog(mallory: RawUA, ruri: str, route: str, call_id: str, from_: str,
              method: str = "MESSAGE", cseq: int = 2) -> None:
    body = "buy now" if method == "MESSAGE" else ""
    extra = ["Content-Type: text/plain"] if body else []
    mallory.send_request(f"{method} {ruri} SIP/2.0", [
        f"Route: {route}", f"From: {from_};tag=m1", f"To: <{ruri}>;tag=b1",
        f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", *extra], body)


def test_lifted_route_token_does_not_relay_to_a_foreign_host(
        make_server: Make, tmp_path: Path) -> None:
    """Finding 1: the `sr` of a 180 let a stranger relay anything anywhere."""
    server = auth_server(make_server, tmp_path)
    bob = registered_bob(server)
    with RawUA(server.port) as mallory, foreign_host() as victim:
        _, _, ringing = early_dialog(server, mallory, bob, "lift-1")
        route = header(ringing, "Record-Route")
        assert route is not None and ";sr=" in route
        target = f"sip:victim@{FOREIGN}:{victim.getsockname()[1]}"
        in_dialog(mallory, target, route, "lift-1", f"<sip:alice@{server.uri_host}>")
        assert received(victim) is None, "relayed to a foreign host on a lifted token"
        assert status_line(mallory.final()).split()[1] in ("403", "407")
    bob.close()


def test_lifted_route_token_does_not_skip_authentication(
        make_server: Make, tmp_path: Path) -> None:
    """Finding 1: an in-dialog request From a local user is challenged, not relayed."""
    server = auth_server(make_server, tmp_path)
    bob = registered_bob(server)
    with RawUA(server.port) as mallory:
        _, _, ringing = early_dialog(server, mallory, bob, "lift-2")
        route = header(ringing, "Record-Route")
        assert route is not None
        in_dialog(mallory, f"sip:bob@{HOST}:{bob.port}", route, "lift-2",
                  f"<sip:alice@{server.uri_host}>")
        assert bob_receives(bob, "MESSAGE") is None, "spoofed local From relayed unchallenged"
        answer = mallory.final()
        assert status_line(answer).startswith("SIP/2.0 407"), answer
    bob.close()


def test_a_strangers_dialog_still_works_along_its_own_route(
        make_server: Make, tmp_path: Path) -> None:
    """The token binds the dialog, it does not break it: ACK and BYE of a
    stranger's answered call reach bob, and bob's own BYE reaches the stranger."""
    server = auth_server(make_server, tmp_path)
    bob = registered_bob(server)
    with RawUA(server.port) as mallory:
        invite, addr, _ = early_dialog(server, mallory, bob, "legit-1")
        reply_to(bob.sock, invite, addr, "200 OK",
                    [f"Contact: <sip:bob@{HOST}:{bob.port}>"], to_tag="b1")
        while True:
            answer = mallory.recv(3)
            assert answer is not None
            if answer[0].startswith("SIP/2.0 200"):
                break
        route = header(answer[0], "Record-Route")
        assert route is not None
        # what the caller sees is not what the callee was given: one token each way
        assert route != header(invite, "Record-Route")
        contact = f"sip:bob@{HOST}:{bob.port}"
        in_dialog(mallory, contact, route, "legit-1", "<sip:mallory@evil.invalid>", "ACK", 1)
        assert bob_receives(bob, "ACK") is not None
        in_dialog(mallory, contact, route, "legit-1", "<sip:mallory@evil.invalid>", "BYE", 2)
        got = bob_receives(bob, "BYE")
        assert got is not None, server.log()[-3000:]
        reply_to(bob.sock, got[0], got[1], "200 OK")
        assert status_line(mallory.final()) == "SIP/2.0 200 OK"
    bob.close()


def test_the_callees_in_dialog_request_is_authenticated_then_relayed(
        make_server: Make, tmp_path: Path) -> None:
    """bob's BYE rides the token of the INVITE he got; being From a local user
    it is challenged first (RFC 3261 allows it), then relayed to the caller."""
    server = auth_server(make_server, tmp_path)
    bob = registered_bob(server)
    srv = server.uri_host
    with RawUA(server.port) as mallory:
        invite, addr, _ = early_dialog(server, mallory, bob, "callee-bye")
        reply_to(bob.sock, invite, addr, "200 OK", [f"Contact: <sip:bob@{HOST}:{bob.port}>"],
                 to_tag="b1")
        route = header(invite, "Record-Route")
        assert route is not None
        target = f"sip:mallory@{HOST}:{mallory.port}"

        def bye(cseq: int, auth: str | None = None) -> str:
            lines = [f"BYE {target} SIP/2.0",
                     f"Via: SIP/2.0/UDP {HOST}:{bob.port};rport;branch=z9hG4bK-bye{cseq}",
                     "Max-Forwards: 70", f"Route: {route}", f"From: <sip:bob@{srv}>;tag=b1",
                     "To: <sip:mallory@evil.invalid>;tag=m1", "Call-ID: callee-bye",
                     f"CSeq: {cseq} BYE", *([f"Proxy-Authorization: {auth}"] if auth else []),
                     "Content-Length: 0"]
            bob.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (HOST, server.port))
            while True:
                data = bob.sock.recv(65535).decode()
                if data.startswith("SIP/2.0 ") and not data.startswith("SIP/2.0 1") \
                        and f"{cseq} BYE" in data:
                    return data

        challenge = bye(1)
        assert status_line(challenge).startswith("SIP/2.0 407"), challenge
        creds = digest_for(challenge, "BYE", target, "bob", "secret")
        # mallory answers the BYE once it is relayed to her
        bob.sock.settimeout(3)
        bob_final: list[str] = []
        thread = threading.Thread(target=lambda: bob_final.append(bye(2, creds)))
        thread.start()
        while True:
            got = mallory.recv(3)
            assert got is not None, server.log()[-3000:]
            if got[0].startswith("BYE "):
                mallory.reply(got[0], got[1], "200 OK")
                break
        thread.join(5)
        assert bob_final and status_line(bob_final[0]) == "SIP/2.0 200 OK"
    bob.close()


def digest_for(challenge: str, method: str, uri: str, user: str, password: str) -> str:
    values = headers(challenge, "Proxy-Authenticate")
    ch = next(c for c in map(parse_challenge, values) if c.algorithm == "MD5")
    resp = request_digest("MD5", ha1("MD5", user, ch.realm, password), ch.nonce, method, uri,
                          qop="auth", nc="00000001", cnonce="c0ffee")
    return Credentials(user, ch.realm, ch.nonce, uri, resp, "MD5", "auth", "00000001",
                       "c0ffee").to_header()


SPELLINGS = ["127.0.0.1.", "127.1", "2130706433", "[::ffff:127.0.0.1]", "LOCALHOST"]


def message_answer(server: ServerProcess, ruri: str, from_: str, to: str, call_id: str,
                   extra: tuple[str, ...] = ()) -> str:
    """A MESSAGE from a raw socket; the final answer."""
    with RawUA(server.port) as ua:
        ua.send_request(f"MESSAGE {ruri} SIP/2.0", [
            f"From: <{from_}>;tag=x1", f"To: <{to}>", f"Call-ID: {call_id}", "CSeq: 1 MESSAGE",
            *extra, "Content-Type: text/plain"], "hello")
        return ua.final()


@pytest.mark.parametrize("host", SPELLINGS)
def test_local_user_in_another_spelling_is_challenged(
        make_server: Make, tmp_path: Path, host: str) -> None:
    """Finding 5: alice@127.0.0.1. is alice, not a stranger stored unchallenged."""
    server = auth_server(make_server, tmp_path)
    bob = f"sip:bob@{server.uri_host}"
    answer = message_answer(server, bob, f"sip:alice@{host}", bob, "spell-1")
    assert status_line(answer).startswith("SIP/2.0 407"), answer
    assert server.rows() == []


def test_message_for_a_local_user_in_another_spelling_is_kept_for_that_user(
        make_server: Make, tmp_path: Path) -> None:
    """bob@127.1 is bob@127.0.0.1: stored under the one spelling his REGISTER dumps."""
    server = auth_server(make_server, tmp_path)
    answer = message_answer(server, f"sip:bob@127.1:{server.port}", "sip:carol@remote.invalid",
                            f"sip:bob@127.0.0.1.:{server.port}", "spell-2")
    assert status_line(answer).startswith("SIP/2.0 202"), answer
    assert [(r["username"], r["domain"]) for r in server.rows()] == [("bob", HOST)]


IDENTITY = [
    "Remote-Party-ID: \"Alice\" <sip:alice@127.0.0.1>;party=calling;screen=yes",
    "P-Asserted-Identity: <sip:alice@127.0.0.1>",
    "P-Preferred-Identity: <sip:alice@127.0.0.1>",
    "Identity: forged.signature;info=<https://evil.invalid/cert>",
]


def test_identity_headers_of_an_untrusted_sender_are_not_stored(
        make_server: Make, tmp_path: Path) -> None:
    """Finding 5: a stranger's Remote-Party-ID & co. never reach the recipient."""
    server = auth_server(make_server, tmp_path)
    bob = f"sip:bob@{server.uri_host}"
    answer = message_answer(server, bob, "sip:eve@evil.invalid", bob, "ident-1",
                            (*IDENTITY, "Subject: kept"))
    assert status_line(answer).startswith("SIP/2.0 202"), answer
    extra = server.rows()[0]["extra_hdrs"] or ""
    assert "Subject: kept" in extra
    for line in IDENTITY:
        assert line.split(":", 1)[0] not in extra, extra


def test_identity_headers_of_an_untrusted_sender_are_not_relayed(
        make_server: Make, tmp_path: Path) -> None:
    server = auth_server(make_server, tmp_path)
    bob = registered_bob(server)
    with RawUA(server.port) as eve:
        eve.send_request(f"MESSAGE sip:bob@{server.uri_host} SIP/2.0", [
            "From: <sip:eve@evil.invalid>;tag=e1", f"To: <sip:bob@{server.uri_host}>",
            "Call-ID: ident-2", "CSeq: 1 MESSAGE", *IDENTITY, "Content-Type: text/plain"],
            "trust me")
        got = bob_receives(bob, "MESSAGE")
    assert got is not None
    for line in IDENTITY:
        assert headers(got[0], line.split(":", 1)[0]) == [], got[0]
    bob.close()


REGISTRAR = "sip:registrar@127.0.0.1"


@pytest.mark.parametrize("use_contact", [1, 0])
def test_offline_notice_is_not_reflected_to_a_named_host(
        make_server: Make, use_contact: int) -> None:
    """Finding 6: with auth off, one datagram naming a victim in its Contact (or
    From) made the server send the victim the offline notice and its resends."""
    server = make_server(**{"msilo.registrar": REGISTRAR, "msilo.use_contact": use_contact})
    with RawUA(server.port) as eve, foreign_host() as victim:
        named = f"sip:victim@{FOREIGN}:{victim.getsockname()[1]}"
        from_ = "sip:eve@evil.invalid" if use_contact else named
        eve.send_request(f"MESSAGE sip:bob@{server.uri_host} SIP/2.0", [
            f"From: <{from_}>;tag=e1", f"To: <sip:bob@{server.uri_host}>",
            "Call-ID: reflect-1", "CSeq: 1 MESSAGE", f"Contact: <{named}>",
            "Content-Type: text/plain"], "hello")
        assert status_line(eve.final()).startswith("SIP/2.0 202")
        assert received(victim) is None, "the offline notice went to a host the request named"
        # the sender itself (the request's source) is told
        notice = eve.recv(3)
        assert notice is not None and notice[0].startswith("MESSAGE "), notice
        assert b"is offline" in notice[0].encode()

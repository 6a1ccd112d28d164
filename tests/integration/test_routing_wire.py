"""The default route on the wire: Route headers, identities, loops, unanswered requests."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration import sipwire
from tests.integration.harness import ServerProcess
from tests.integration.sipwire import header, status_line
from tests.integration.test_auth import auth_server

Make = Callable[..., ServerProcess]
HOST = "127.0.0.1"


class Ua:
    """One UDP socket sending hand-made requests and reading the answers."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(3)
        self.port = self.sock.getsockname()[1]
        self.n = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, uri: str, *, to: str | None = None, frm: str | None = None,
             extra: tuple[str, ...] = (), body: bytes = b"", vias: tuple[str, ...] = (),
             to_tag: str = "") -> None:
        self.n += 1
        frm = frm or f"sip:alice@{HOST}"
        to = to or uri
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{self.port};rport"
            f";branch=z9hG4bK-rt-{self.n}-{time.time_ns()}",
            *(f"Via: {v}" for v in vias),   # hops before the sender
            "Max-Forwards: 70",
            f"From: <{frm}>;tag=f{self.n}",
            f"To: <{to}>{';tag=' + to_tag if to_tag else ''}",
            f"Call-ID: rt-{self.n}-{self.port}@{HOST}",
            f"CSeq: {self.n} {method}",
            # our own Contact unless the test gives one: a REGISTER binds only
            # what the test names (a second binding here would get deliveries
            # nobody answers, and the server's stop would wait them out)
            *([] if any(e.lower().startswith("contact:") for e in extra)
              else [f"Contact: <sip:alice@{HOST}:{self.port}>"]),
            *extra,
        ]
        if body:
            lines.append("Content-Type: text/plain")
        lines.append(f"Content-Length: {len(body)}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body,
                         (HOST, self.server.port))

    def final(self, wait: float = 3.0) -> str | None:
        """The first final response, None when none comes within wait."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                return None
            if data.startswith("SIP/2.0 ") and not data.startswith("SIP/2.0 1"):
                return data
        return None

    def ask(self, method: str, uri: str, **kw: object) -> str:
        self.send(method, uri, **kw)  # type: ignore[arg-type]
        answer = self.final()
        assert answer is not None, f"no answer to {method}\n{self.server.log()[-3000:]}"
        return answer


@pytest.fixture
def ua(server: ServerProcess) -> Ua:
    client = Ua(server)
    yield client  # type: ignore[misc]
    client.close()


def our_route(server: ServerProcess) -> str:
    return f"Route: <sip:{HOST}:{server.port};lr>"


def test_route_to_us_does_not_make_an_open_relay(server: ServerProcess, ua: Ua) -> None:
    answer = ua.ask("MESSAGE", "sip:victim@192.0.2.1", extra=(our_route(server),), body=b"hi")
    assert status_line(answer) == "SIP/2.0 403 Relaying denied"
    # a Route leading elsewhere after ours is a foreign request as well
    answer = ua.ask("MESSAGE", f"sip:carol@{HOST}:{server.port}", body=b"hi",
                    extra=(our_route(server), "Route: <sip:192.0.2.1;lr>"))
    assert status_line(answer) == "SIP/2.0 403 Relaying denied"


def test_preloaded_route_to_us_routes_as_without_it(server: ServerProcess, ua: Ua) -> None:
    me = f"{HOST}:{server.port}"
    answer = ua.ask("REGISTER", f"sip:{me}", to=f"sip:alice@{me}",
                    extra=(our_route(server), "Expires: 60"))
    assert status_line(answer).startswith("SIP/2.0 200"), answer
    answer = ua.ask("MESSAGE", f"sip:carol@{me}", extra=(our_route(server),), body=b"hi")
    assert status_line(answer) == "SIP/2.0 202 Accepted"
    line = next(x for x in server.cli("stats").stdout.splitlines() if "rx_requests" in x)
    assert line.split()[-1] == "2"   # routed here, not relayed back to ourselves


def test_register_contact_pointing_at_the_server_is_refused(server: ServerProcess,
                                                            ua: Ua) -> None:
    me = f"{HOST}:{server.port}"
    answer = ua.ask("REGISTER", f"sip:{me}", to=f"sip:bob@{me}",
                    extra=(f"Contact: <sip:bob@{me}>", "Expires: 60"))
    assert status_line(answer) == "SIP/2.0 403 Contact points to this server"
    assert "bob" not in server.cli("location", "list").stdout


def test_own_via_twice_is_a_loop(server: ServerProcess, ua: Ua) -> None:
    ours = f"SIP/2.0/UDP {HOST}:{server.port};branch=z9hG4bK-ours-"
    answer = ua.ask("MESSAGE", f"sip:carol@{HOST}:{server.port}", body=b"hi",
                    vias=(ours + "1", ours + "2"))
    assert status_line(answer) == "SIP/2.0 482 Loop Detected"


def test_unreachable_binding_stores_the_message(server: ServerProcess, ua: Ua) -> None:
    me = f"{HOST}:{server.port}"
    bad = "a" * 64 + ".example"   # a name no resolver accepts
    answer = ua.ask("REGISTER", f"sip:{me}", to=f"sip:bob@{me}",
                    extra=(f"Contact: <sip:bob@{bad}>", "Expires: 60"))
    assert status_line(answer).startswith("SIP/2.0 200"), answer
    answer = ua.ask("MESSAGE", f"sip:bob@{me}", body=b"kept")
    assert status_line(answer) == "SIP/2.0 202 Accepted", server.log()[-2000:]


def test_identity_headers_from_untrusted_senders_are_not_stored(server: ServerProcess,
                                                                ua: Ua) -> None:
    me = f"{HOST}:{server.port}"
    answer = ua.ask("MESSAGE", f"sip:carol@{me}", body=b"hi", extra=(
        "P-Asserted-Identity: <sip:ceo@example.com>", "Privacy: none",
        "Referred-By: <sip:ceo@example.com>", "Subject: kept"))
    assert status_line(answer) == "SIP/2.0 202 Accepted"
    with sqlite3.connect(server.db_path) as db:
        (extra,) = db.execute("SELECT extra_hdrs FROM silo").fetchone()
    assert "Subject: kept" in extra
    assert "Asserted" not in extra and "Privacy" not in extra and "Referred" not in extra


def test_identity_headers_from_trusted_senders_are_stored(make_server: Make) -> None:
    server = make_server(**{"auth.trusted": ["127.0.0.0/8"]})
    client = Ua(server)
    try:
        answer = client.ask("MESSAGE", f"sip:carol@{HOST}:{server.port}", body=b"hi",
                            extra=("P-Asserted-Identity: <sip:gw@example.com>",))
        assert status_line(answer) == "SIP/2.0 202 Accepted"
    finally:
        client.close()
    with sqlite3.connect(server.db_path) as db:
        (extra,) = db.execute("SELECT extra_hdrs FROM silo").fetchone()
    assert "P-Asserted-Identity: <sip:gw@example.com>" in extra


def test_from_a_local_user_on_another_port_is_challenged(make_server: Make,
                                                         tmp_path: Path) -> None:
    server = auth_server(make_server, tmp_path)
    client = Ua(server)
    try:
        answer = client.ask("MESSAGE", f"sip:carol@{HOST}:{server.port}", body=b"hi",
                            frm=f"sip:alice@{HOST}:9")
    finally:
        client.close()
    assert status_line(answer).startswith("SIP/2.0 407"), answer
    assert header(answer, "Proxy-Authenticate")


ROUTES = '''
from sipsilo.sip.uri import SipUri

async def silent(ctx):
    return None

async def dropping(ctx):
    ctx.drop()

async def to_new_uri(ctx):
    await ctx.lookup("location")
    ctx.new_uri = SipUri.parse(ctx.request.headers.get("X-Target"))
    await ctx.t_relay()
'''


def route_server(make_server: Make, tmp_path: Path, name: str) -> ServerProcess:
    mod = tmp_path / "rtroutes"
    mod.mkdir(exist_ok=True)
    (mod / "rt_routes.py").write_text(ROUTES)
    return make_server(env={"PYTHONPATH": str(mod)}, **{"server.route": f"rt_routes:{name}"})


def test_unanswered_request_gets_500(make_server: Make, tmp_path: Path) -> None:
    server = route_server(make_server, tmp_path, "silent")
    client = Ua(server)
    try:
        answer = client.ask("OPTIONS", f"sip:{HOST}:{server.port}")
    finally:
        client.close()
    assert status_line(answer) == "SIP/2.0 500 Server Internal Error - request not handled"
    assert "rt_routes.silent" in server.log()


def test_dropped_request_leaves_no_transaction(make_server: Make, tmp_path: Path) -> None:
    server = route_server(make_server, tmp_path, "dropping")
    client = Ua(server)
    try:
        client.send("OPTIONS", f"sip:{HOST}:{server.port}")
        assert client.final(1.0) is None
    finally:
        client.close()
    stats = server.cli("stats").stdout
    line = next(x for x in stats.splitlines() if "live_transactions" in x)
    assert line.split()[-1] in ("0", "1"), stats  # only the absorbing entry, if any
    assert "request not handled" not in server.log()


def test_t_relay_goes_to_an_assigned_new_uri(make_server: Make, tmp_path: Path) -> None:
    server = route_server(make_server, tmp_path, "to_new_uri")
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind((HOST, 0))
    target.settimeout(3)
    client = Ua(server)
    try:
        port = target.getsockname()[1]
        client.send("MESSAGE", f"sip:carol@{HOST}:{server.port}", body=b"hi",
                    extra=(f"X-Target: sip:carol@{HOST}:{port}",))
        data, source = target.recvfrom(65535)
        assert data.decode(errors="replace").startswith(f"MESSAGE sip:carol@{HOST}:{port} SIP/2.0")
        target.sendto(sipwire.answer(data), source)  # not left to wait out fr_timer at teardown
    finally:
        client.close()
        target.close()


def test_our_listen_address_is_myself_with_domains_set(make_server: Make) -> None:
    # Our Route/Record-Route carry our IP, not the domain: with [server] domains
    # set they must still be recognised, or the request spirals back to us.
    server = make_server(**{"server.domains": ["example.com"]})
    client = Ua(server)
    try:
        answer = client.ask("REGISTER", "sip:example.com", to="sip:alice@example.com",
                            extra=(our_route(server), "Expires: 60"))
        assert status_line(answer).startswith("SIP/2.0 200"), answer
        answer = client.ask("MESSAGE", "sip:carol@example.com", body=b"hi",
                            extra=(our_route(server),))
        assert status_line(answer) == "SIP/2.0 202 Accepted"
    finally:
        client.close()
    stats = server.cli("stats").stdout
    assert "rx_requests" in stats
    line = next(x for x in stats.splitlines() if "rx_requests" in x)
    assert line.split()[-1] == "2", stats   # no spiral through ourselves


def test_made_up_in_dialog_request_is_not_relayed(server: ServerProcess, ua: Ua) -> None:
    # A To tag and a Route that is not ours: not a dialog we record-routed, so
    # a request for elsewhere like any other (no open relay by a forged tag).
    answer = ua.ask("MESSAGE", "sip:victim@192.0.2.1", body=b"hi", to_tag="forged",
                    extra=("Route: <sip:192.0.2.1;lr>",))
    assert status_line(answer) == "SIP/2.0 403 Relaying denied"
    answer = ua.ask("MESSAGE", "sip:victim@192.0.2.1", body=b"hi", to_tag="forged")
    assert status_line(answer) == "SIP/2.0 403 Relaying denied"
    # our own Route, but without the signature our Record-Route carries
    for route in (our_route(server), f"Route: <sip:{HOST}:{server.port};lr;sr=0123456789abcdef>"):
        answer = ua.ask("MESSAGE", "sip:victim@192.0.2.1", body=b"hi", to_tag="forged",
                        extra=(route,))
        assert status_line(answer) == "SIP/2.0 403 Relaying denied"


def test_request_coming_back_with_our_branch_for_the_same_uri_is_a_loop(
    server: ServerProcess, ua: Ua
) -> None:
    # Register bob, then look at the branch the server puts on what it relays
    # to him: sent back to the server for the same Request-URI it is a loop.
    me = f"{HOST}:{server.port}"
    bob = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bob.bind((HOST, 0))
    bob.settimeout(3)
    try:
        contact = f"sip:bob@{HOST}:{bob.getsockname()[1]}"
        answer = ua.ask("REGISTER", f"sip:{me}", to=f"sip:bob@{me}",
                        extra=(f"Contact: <{contact}>", "Expires: 60"))
        assert status_line(answer).startswith("SIP/2.0 200"), answer
        ua.send("OPTIONS", f"sip:bob@{me}")
        data, source = bob.recvfrom(65535)
        relayed = data.decode()
        top = header(relayed.encode(), "Via")
        assert top is not None
        ours = top.split(",")[0].strip()
        answer = ua.ask("OPTIONS", contact, vias=(ours,))
        assert status_line(answer) == "SIP/2.0 482 Loop Detected"
        bob.sendto(sipwire.answer(data), source)  # ends the relay: no fr_timer at teardown
    finally:
        bob.close()


def test_register_for_a_foreign_domain_is_refused_or_relayed_as_configured(
    make_server: Make,
) -> None:
    registrar = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    registrar.bind((HOST, 0))
    registrar.settimeout(3)
    elsewhere = f"{HOST}:{registrar.getsockname()[1]}"   # not one of our ports
    try:
        for relay, expect in ((False, "SIP/2.0 403 Forbidden - domain not served"), (True, None)):
            server = make_server(**{"proxy.relay_foreign": relay})
            ua = Ua(server)
            try:
                ua.send("REGISTER", f"sip:{elsewhere}", to=f"sip:bob@{elsewhere}",
                        extra=(f"Contact: <sip:bob@{HOST}:{ua.port}>", "Expires: 60"))
                if expect is not None:
                    answer = ua.final()
                    assert answer is not None and status_line(answer) == expect
                else:
                    data, source = registrar.recvfrom(65535)
                    relayed = data.decode()
                    assert relayed.startswith(f"REGISTER sip:{elsewhere} SIP/2.0")
                    assert "Max-Forwards: 69" in relayed
                    # answered, so that stopping the server need not wait out fr_timer
                    registrar.sendto(sipwire.answer(data), source)
            finally:
                ua.close()
                server.stop()
    finally:
        registrar.close()

"""Push notifications (RFC 8599): a stored MESSAGE wakes the recipient's phone through
its push target, once per interval; a dead token is forgotten. Each provider's
request is checked by a local server: the webhook's JSON, a Web Push payload
decrypted with the UA's own keys and its VAPID signature, FCM's OAuth2 grant and
message, APNs' ES256 token over HTTP/2."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.integration.harness import ServerProcess, free_port
from tests.integration.push_servers import (
    H2Recorder,
    HttpRecorder,
    b64d,
    register,
    send_message,
    verify_jwt,
    webpush_decrypt,
)
from tests.integration.silo_helpers import stats, wait_for
from tests.integration.sipwire import RawUA

MakeServer = Callable[..., ServerProcess]
PN = ";pn-provider=fcm;pn-prid=T;pn-param=P"


@pytest.fixture
def http() -> Iterator[HttpRecorder]:
    recorder = HttpRecorder()
    yield recorder
    recorder.close()


def _pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _counters(server: ServerProcess) -> dict[str, int]:
    return {k.partition(":")[2]: v for k, v in stats(server).items()
            if k.startswith("msilo:push_")}


def test_webhook_push_after_failed_relay_then_to_last_target_coalesced(
        make_server: MakeServer, http: HttpRecorder) -> None:
    metrics_port = free_port()
    server = make_server(**{"tm.fr_timer": 1.0, "push.webhook_url": f"{http.url}/hook",
                            "push.min_interval": 2.0,
                            "http.listen": f"127.0.0.1:{metrics_port}"})
    with RawUA(server.port) as bob, RawUA(server.port) as alice:
        assert register(bob, server.port, "bob", PN).startswith("SIP/2.0 200")
        # bob's phone sleeps: the relayed MESSAGE times out (fr_timer), then it is stored.
        assert send_message(alice, server.port, "bob", "one").startswith("SIP/2.0 202")
        wait_for(lambda: len(http.posts()) == 1, 5)
        push = http.posts()[0]
        assert push.path == "/hook" and push.headers["content-type"] == "application/json"
        assert push.json() == {"aor": "sip:bob@127.0.0.1", "pn_provider": "fcm",
                               "pn_prid": "T", "pn_param": "P", "waiting": 1,
                               "newest_from": "sip:alice@127.0.0.1"}

        # Unregistered: no binding, the last push target still wakes it, at once
        # (a REGISTER or unREGISTER starts the interval afresh).
        assert register(bob, server.port, "bob", PN, expires=0, cseq=2).startswith(
            "SIP/2.0 200")
        assert send_message(alice, server.port, "bob", "two").startswith("SIP/2.0 202")
        wait_for(lambda: len(http.posts()) == 2, 5)
        assert http.posts()[1].json()["waiting"] == 2
        assert http.posts()[1].json()["pn_prid"] == "T"

        # Ten more within the interval: one push at its end, counting all twelve.
        started = time.monotonic()
        for i in range(10):
            assert send_message(alice, server.port, "bob", f"burst {i}").startswith(
                "SIP/2.0 202")
        assert time.monotonic() - started < 1.5
        assert len(http.posts()) == 2
        wait_for(lambda: len(http.posts()) == 3, 5)
        assert http.posts()[2].json()["waiting"] == 12
        time.sleep(2.5)  # nothing more is waiting to go
        assert len(http.posts()) == 3
    counters = _counters(server)
    assert counters["push_sent"] == 3 and counters["push_failed"] == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        exposition = r.read().decode()
    assert "sipsilo_push_sent_total 3.0" in exposition
    assert "sipsilo_push_removed_total 0.0" in exposition


def test_dead_token_removes_the_target_and_privacy_hides_the_sender(
        make_server: MakeServer, http: HttpRecorder) -> None:
    http.status = 410
    server = make_server(**{"tm.fr_timer": 1.0, "push.webhook_url": f"{http.url}/hook",
                            "push.min_interval": 0.0,
                            "push.privacy": True})
    with RawUA(server.port) as bob, RawUA(server.port) as alice:
        register(bob, server.port, "bob", PN)
        register(bob, server.port, "bob", PN, expires=0, cseq=2)
        # Saved just after the 200 went out; kept after the binding is gone.
        wait_for(lambda: [dict(r) for r in server.rows("select aor, prid from silo_push")] == [
            {"aor": "sip:bob@127.0.0.1", "prid": "T"}], 5)
        assert send_message(alice, server.port, "bob", "one").startswith("SIP/2.0 202")
        wait_for(lambda: len(http.posts()) == 1, 5)
        assert http.posts()[0].json()["newest_from"] == ""
        wait_for(lambda: _counters(server)["push_removed"] == 1, 5)
        assert server.rows("select * from silo_push") == []
        assert send_message(alice, server.port, "bob", "two").startswith("SIP/2.0 202")
        time.sleep(0.5)
        assert len(http.posts()) == 1  # no target any more: no push
    wait_for(lambda: "push target of sip:bob@127.0.0.1 removed" in server.log())


def test_webpush_payload_decrypts_with_the_ua_keys_and_vapid_verifies(
        make_server: MakeServer, http: HttpRecorder, tmp_path: Path) -> None:
    vapid = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "vapid.pem").write_bytes(_pem(vapid))
    ua_key = ec.generate_private_key(ec.SECP256R1())
    ua_public = ua_key.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)
    auth = os.urandom(16)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    http.status = 201
    endpoint = f"{http.url}/push/sub-1"
    server = make_server(**{"tm.fr_timer": 1.0,
                            "push.vapid_private_key": str(tmp_path / "vapid.pem"),
                            "push.vapid_subject": "mailto:ops@example.com"})
    params = (f";pn-provider=webpush;pn-prid={quote(endpoint, safe='')}"
              f";pn-param={b64(ua_public)}.{b64(auth)}")
    with RawUA(server.port) as bob, RawUA(server.port) as alice:
        register(bob, server.port, "bob", params)
        register(bob, server.port, "bob", params, expires=0, cseq=2)
        assert send_message(alice, server.port, "bob", "hi").startswith("SIP/2.0 202")
        wait_for(lambda: len(http.posts()) == 1, 5)
    got = http.posts()[0]
    assert got.path == "/push/sub-1"
    assert got.headers["content-encoding"] == "aes128gcm" and got.headers["ttl"] == "86400"
    payload = json.loads(webpush_decrypt(got.body, ua_key, auth))
    assert payload == {"aor": "sip:bob@127.0.0.1", "waiting": 1,
                       "newest_from": "sip:alice@127.0.0.1"}
    scheme, _, rest = got.headers["authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    k = b64d(fields["k"])
    assert k == vapid.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)
    _, claims = verify_jwt(fields["t"], ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), k))
    assert claims["aud"] == http.url and claims["sub"] == "mailto:ops@example.com"
    assert claims["exp"] > time.time()


def test_fcm_oauth2_grant_and_http_v1_message(
        make_server: MakeServer, http: HttpRecorder, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "sa.json").write_text(json.dumps({
        "type": "service_account", "project_id": "proj-1",
        "client_email": "push@proj-1.iam.example", "private_key": _pem(key).decode()}))
    http.replies["/token"] = (200, b'{"access_token": "tok-1", "expires_in": 3600}')
    server = make_server(**{"tm.fr_timer": 1.0, "push.fcm_credentials": str(tmp_path / "sa.json"),
                            "push.fcm_base_url": http.url,
                            "push.fcm_token_url": f"{http.url}/token"})
    with RawUA(server.port) as bob, RawUA(server.port) as alice:
        register(bob, server.port, "bob", PN)
        register(bob, server.port, "bob", PN, expires=0, cseq=2)
        assert send_message(alice, server.port, "bob", "hi").startswith("SIP/2.0 202")
        wait_for(lambda: len(http.posts("/v1/projects/proj-1/messages:send")) == 1, 5)
        # Woken, the phone registers (from wherever it now is, with its token): the
        # dump delivers at once.
        with RawUA(server.port) as woken:
            assert register(woken, server.port, "bob", PN, cseq=1).startswith("SIP/2.0 200")
            got = woken.recv(5)
            assert got is not None and got[0].startswith("MESSAGE ") and got[0].endswith("hi")
            woken.reply(got[0], got[1], "200 OK")
            wait_for(lambda: server.rows() == [], 5)
    grant = parse_qs(http.posts("/token")[0].body.decode())
    assert grant["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    _, claims = verify_jwt(grant["assertion"][0], key.public_key())
    assert claims["iss"] == "push@proj-1.iam.example"
    assert claims["aud"] == f"{http.url}/token"
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    send = http.posts("/v1/projects/proj-1/messages:send")[0]
    assert send.headers["authorization"] == "Bearer tok-1"
    message = send.json()["message"]
    assert message["token"] == "T"
    assert message["data"]["waiting"] == "1" and message["data"]["aor"] == "sip:bob@127.0.0.1"


def test_apns_es256_token_over_http2(make_server: MakeServer, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "apns.p8").write_bytes(_pem(key))
    apns = H2Recorder()
    try:
        server = make_server(**{"tm.fr_timer": 1.0, "push.apns_key_file": str(tmp_path / "apns.p8"),
                                "push.apns_key_id": "KEY123", "push.apns_team_id": "TEAM1",
                                "push.apns_base_url": apns.url})
        with RawUA(server.port) as bob, RawUA(server.port) as alice:
            params = ";pn-provider=apns;pn-prid=devtok;pn-param=TEAM1.com.example.app"
            register(bob, server.port, "bob", params)
            register(bob, server.port, "bob", params, expires=0, cseq=2)
            assert send_message(alice, server.port, "bob", "hi").startswith("SIP/2.0 202")
            wait_for(lambda: len(apns.received) == 1, 5)
    finally:
        apns.close()
    got = apns.received[0]
    assert got.method == "POST" and got.path == "/3/device/devtok"
    assert got.headers["apns-topic"] == "com.example.app"
    assert got.headers["apns-push-type"] == "alert"
    scheme, _, token = got.headers["authorization"].partition(" ")
    assert scheme == "bearer"
    header, claims = verify_jwt(token, key.public_key())
    assert header["kid"] == "KEY123" and claims["iss"] == "TEAM1"
    body = got.json()
    assert body["aps"]["badge"] == 1 and body["waiting"] == 1


def test_config_errors_name_the_key(make_server: MakeServer, tmp_path: Path) -> None:
    (tmp_path / "sa.json").write_text("{}")
    server = ServerProcess(tmp_path / "bad", 0, {"push.fcm_credentials": str(tmp_path / "sa.json")})
    with pytest.raises(RuntimeError, match=r"push\.fcm_credentials: .*missing project_id"):
        server.start(timeout=10)

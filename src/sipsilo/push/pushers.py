"""The push providers: a webhook, Web Push, FCM HTTP v1 and APNs.

Each pusher turns one :class:`Notice` into one HTTP request and says how it went:
``sent``, ``failed`` (try again with the next message), or ``dead`` (the provider says
the token is gone: 410, 404, ``UNREGISTERED``, ``BadDeviceToken``; the target is then
removed). Every base URL is configurable so that the tests run each pusher against a
local server that checks the request's format and signature.

HTTP goes through httpx (HTTP/2 for APNs); Web Push encryption (RFC 8291, aes128gcm)
is http_ece's and VAPID (RFC 8292) py_vapid's. The FCM and APNs JWTs are signed here
with ``cryptography``: two small, fixed claim sets do not need a JWT library.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sipsilo.config_push import PushConfig, load_service_account
from sipsilo.push.store import PushTarget

Outcome = Literal["sent", "failed", "dead"]
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True, slots=True)
class Notice:
    """One push: whom to wake, how many messages wait, the newest sender ("" if private)."""

    target: PushTarget
    waiting: int
    newest_from: str

    def data(self) -> dict[str, Any]:
        t = self.target
        return {"aor": t.aor, "pn_provider": t.provider, "pn_prid": t.prid,
                "pn_param": t.param, "waiting": self.waiting, "newest_from": self.newest_from}


class Pusher(Protocol):
    async def push(self, notice: Notice) -> tuple[Outcome, str]:
        """The outcome and a short reason for the log."""
        ...


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt(header: dict[str, Any], claims: dict[str, Any], key: Any) -> str:
    """A compact JWS: RS256 for an RSA key, ES256 (raw r||s) for a P-256 key."""
    head = b64url(json.dumps(header, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing = f"{head}.{body}".encode()
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(signing, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{head}.{body}.{b64url(sig)}"


def _outcome(response: httpx.Response, ok: tuple[int, ...] = (200, 201, 202, 204)
             ) -> tuple[Outcome, str]:
    text = response.text[:200]
    if response.status_code in ok or 200 <= response.status_code < 300:
        return "sent", str(response.status_code)
    if response.status_code in (404, 410) or "UNREGISTERED" in text or (
            "BadDeviceToken" in text):
        return "dead", f"{response.status_code} {text}".strip()
    return "failed", f"{response.status_code} {text}".strip()


def _load_pem(path: Path) -> Any:
    return serialization.load_pem_private_key(path.read_bytes(), None)


class WebhookPusher:
    """POST the notice as JSON to ``[push] webhook_url`` (any provider)."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url

    async def push(self, notice: Notice) -> tuple[Outcome, str]:
        return _outcome(await self.client.post(self.url, json=notice.data()))


class WebPushPusher:
    """RFC 8030 push with an RFC 8291 (aes128gcm) payload and RFC 8292 VAPID.

    ``pn-prid`` is the subscription endpoint URL (%-escaped in the Contact URI),
    ``pn-param`` the UA's ``p256dh`` public key and ``auth`` secret, base64url,
    joined by a dot.
    """

    def __init__(self, client: httpx.AsyncClient, key_path: Path, subject: str,
                 ttl: int) -> None:
        from py_vapid import Vapid02

        self.client = client
        self.vapid = Vapid02(private_key=_load_pem(key_path))
        self.subject, self.ttl = subject, ttl

    async def push(self, notice: Notice) -> tuple[Outcome, str]:
        import http_ece

        target = notice.target
        endpoint = target.prid
        parts = urlsplit(endpoint)
        keys = target.param.split(".")
        if parts.scheme not in ("http", "https") or len(keys) != 2:
            return "dead", "not a Web Push subscription (pn-prid URL, pn-param p256dh.auth)"
        try:
            ua_public, auth = b64url_decode(keys[0]), b64url_decode(keys[1])
        except ValueError:
            return "dead", "pn-param is not base64url"
        payload = json.dumps({"aor": target.aor, "waiting": notice.waiting,
                              "newest_from": notice.newest_from}).encode()
        try:
            body = http_ece.encrypt(payload, private_key=ec.generate_private_key(ec.SECP256R1()),
                                    dh=ua_public, auth_secret=auth, version="aes128gcm")
        except Exception as exc:  # a key that is not a P-256 point, a wrong-sized secret
            return "dead", f"cannot encrypt to this subscription: {exc}"
        aud = f"{parts.scheme}://{parts.netloc}"
        headers = self.vapid.sign({"sub": self.subject, "aud": aud,
                                   "exp": int(time.time()) + 12 * 3600})
        headers.update({"TTL": str(self.ttl), "Content-Encoding": "aes128gcm",
                        "Content-Type": "application/octet-stream", "Urgency": "high"})
        return _outcome(await self.client.post(endpoint, content=body, headers=headers))


class FcmPusher:
    """FCM HTTP v1: an OAuth2 access token (JWT bearer grant, RFC 7523) from the
    service account, then ``POST {base}/v1/projects/{project}/messages:send``."""

    def __init__(self, client: httpx.AsyncClient, credentials: Path, base_url: str,
                 token_url: str | None) -> None:
        account = load_service_account(credentials)
        self.client = client
        self.project, self.email = account["project_id"], account["client_email"]
        self.key = serialization.load_pem_private_key(account["private_key"].encode(), None)
        self.token_url = token_url or account.get("token_uri") or DEFAULT_TOKEN_URL
        self.send_url = f"{base_url}/v1/projects/{self.project}/messages:send"
        self._token: tuple[str, float] | None = None

    async def _access_token(self) -> str:
        now = time.time()
        if self._token is not None and self._token[1] > now + 60:
            return self._token[0]
        assertion = jwt({"alg": "RS256", "typ": "JWT"},
                        {"iss": self.email, "scope": FCM_SCOPE, "aud": self.token_url,
                         "iat": int(now), "exp": int(now) + 3600}, self.key)
        r = await self.client.post(self.token_url, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
        r.raise_for_status()
        data = r.json()
        token = str(data["access_token"])
        self._token = (token, now + float(data.get("expires_in", 3600)))
        return token

    async def push(self, notice: Notice) -> tuple[Outcome, str]:
        try:
            token = await self._access_token()
        except (httpx.HTTPStatusError, KeyError, ValueError) as exc:
            return "failed", f"no FCM access token: {exc}"
        data = {k: str(v) for k, v in notice.data().items()}
        message = {"message": {"token": notice.target.prid, "data": data,
                               "android": {"priority": "high"}}}
        r = await self.client.post(self.send_url, json=message,
                                   headers={"Authorization": f"Bearer {token}"})
        if r.status_code == 401:
            self._token = None  # revoked or expired early: fetch a new one next time
        return _outcome(r)


class ApnsPusher:
    """APNs over HTTP/2 with token authentication (an ES256 JWT, renewed every 40 min).

    ``pn-param`` is ``<team id>.<topic>`` as RFC 8599 §13 has it (the topic being the
    bundle id, with ``.voip`` for VoIP pushes); ``[push] apns_topic`` when it has no dot.
    """

    def __init__(self, client: httpx.AsyncClient, cfg: PushConfig, key_path: Path) -> None:
        self.client = client
        self.key = _load_pem(key_path)
        self.key_id, self.team = cfg.apns_key_id, cfg.apns_team_id
        self.base, self.topic = cfg.apns_base_url, cfg.apns_topic
        self._jwt: tuple[str, float] | None = None

    def _token(self) -> str:
        now = time.time()
        if self._jwt is None or self._jwt[1] < now - 2400:
            self._jwt = (jwt({"alg": "ES256", "kid": self.key_id},
                             {"iss": self.team, "iat": int(now)}, self.key), now)
        return self._jwt[0]

    async def push(self, notice: Notice) -> tuple[Outcome, str]:
        target = notice.target
        topic = target.param.partition(".")[2] or self.topic
        if not topic:
            return "failed", "no APNs topic (pn-param team.topic or [push] apns_topic)"
        voip = topic.endswith(".voip")
        aps: dict[str, Any] = {} if voip else {
            "alert": {"title": "New messages",
                      "body": (f"{notice.waiting} waiting" + (
                          f", newest from {notice.newest_from}" if notice.newest_from else ""))},
            "badge": notice.waiting, "sound": "default"}
        body = {"aps": aps, "aor": target.aor, "waiting": notice.waiting,
                "newest_from": notice.newest_from}
        headers = {"authorization": f"bearer {self._token()}", "apns-topic": topic,
                   "apns-push-type": "voip" if voip else "alert",
                   "apns-priority": "10", "apns-expiration": "0"}
        r = await self.client.post(f"{self.base}/3/device/{target.prid}", json=body,
                                   headers=headers)
        return _outcome(r)


class Pushers:
    """The pusher per provider, and the HTTP clients they share."""

    def __init__(self, cfg: PushConfig, data_dir: Path) -> None:
        def path(value: str) -> Path:
            p = Path(value)
            return p if p.is_absolute() else data_dir / p

        timeout = httpx.Timeout(cfg.timeout)
        limits = httpx.Limits(max_connections=cfg.max_concurrent)
        self.client = httpx.AsyncClient(timeout=timeout, limits=limits)
        # APNs speaks HTTP/2 only (h2c with prior knowledge for an http:// test server).
        self.h2 = httpx.AsyncClient(timeout=timeout, limits=limits, http1=False, http2=True)
        self.native: dict[str, Pusher] = {}
        if cfg.vapid_private_key:
            self.native["webpush"] = WebPushPusher(
                self.client, path(cfg.vapid_private_key), cfg.vapid_subject, cfg.webpush_ttl)
        if cfg.fcm_credentials:
            self.native["fcm"] = FcmPusher(self.client, path(cfg.fcm_credentials),
                                           cfg.fcm_base_url, cfg.fcm_token_url)
        if cfg.apns_key_file:
            self.native["apns"] = ApnsPusher(self.h2, cfg, path(cfg.apns_key_file))
        self.webhook = WebhookPusher(self.client, cfg.webhook_url) if cfg.webhook_url else None

    def for_provider(self, provider: str) -> Pusher | None:
        return self.native.get(provider) or self.webhook

    def enabled(self) -> bool:
        return bool(self.native) or self.webhook is not None

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.h2.aclose()

"""The ``[push]`` section: push notifications that wake sleeping phones (docs/push.md).

Its own module so that ``config.py`` stays one screenful per concern. Files named here
(the VAPID key, FCM service account, APNs key) are read when the configuration is
loaded, so a wrong path or a key that does not load is one config line naming the key,
not a failure at the first push.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


def _empty_to_none(value: Any) -> Any:
    return None if value == "" else value


def check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL (got {value!r})")
    return value.rstrip("/") if parts.path in ("", "/") else value


HttpUrl = Annotated[str, AfterValidator(check_http_url)]
OptHttpUrl = Annotated[str | None, BeforeValidator(_empty_to_none),
                       AfterValidator(lambda v: None if v is None else check_http_url(v))]
OptPath = Annotated[str | None, BeforeValidator(_empty_to_none)]


class PushConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # POST JSON {aor, pn_provider, pn_prid, pn_param, waiting, newest_from}; also the
    # pusher of every provider that has no native one configured below.
    webhook_url: OptHttpUrl = None
    # One push per user per this many seconds; later messages are coalesced into one.
    min_interval: Annotated[float, Field(ge=0, le=86400)] = 30.0
    # true: the push carries no sender (newest_from is empty).
    privacy: bool = False
    # A push target not refreshed by a REGISTER for this many days is forgotten.
    keep_days: Annotated[int, Field(ge=1, le=3650)] = 30
    # Seconds one push may take (connect, token fetch, request), and pushes in flight.
    timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_concurrent: Annotated[int, Field(ge=1, le=1000)] = 16
    # Web Push (RFC 8030/8291/8292): VAPID private key (PEM, EC P-256) and its subject.
    vapid_private_key: OptPath = None
    vapid_subject: str = "mailto:postmaster@localhost"
    webpush_ttl: Annotated[int, Field(ge=0, le=2419200)] = 86400
    # FCM HTTP v1: a service-account JSON file; the token URL defaults to the file's.
    fcm_credentials: OptPath = None
    fcm_base_url: HttpUrl = "https://fcm.googleapis.com"
    fcm_token_url: OptHttpUrl = None
    # APNs (HTTP/2, token auth): the .p8 key, its key id and the team id.
    apns_key_file: OptPath = None
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_base_url: HttpUrl = "https://api.push.apple.com"
    # The APNs topic (bundle id) when the target's pn-param does not name one.
    apns_topic: str = ""

    def resolve(self, data_dir: Path) -> PushConfig:
        """Check the files named here load; say which key is wrong."""
        def path(value: str) -> Path:
            p = Path(value)
            return p if p.is_absolute() else data_dir / p

        if self.vapid_private_key:
            _load_ec_key("vapid_private_key", path(self.vapid_private_key))
        if self.fcm_credentials:
            load_service_account(path(self.fcm_credentials))
        if self.apns_key_file:
            _load_ec_key("apns_key_file", path(self.apns_key_file))
            for key in ("apns_key_id", "apns_team_id"):
                if not getattr(self, key):
                    raise PushKeyError(key, "required with push.apns_key_file")
        return self


class PushKeyError(ValueError):
    """A problem with one key of [push]; ``config`` reports it as ``push.<key>``."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


def _load_ec_key(key: str, path: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        pk = load_pem_private_key(path.read_bytes(), None)
    except OSError as exc:
        raise PushKeyError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PushKeyError(key, f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(pk, ec.EllipticCurvePrivateKey) or pk.curve.name != "secp256r1":
        raise PushKeyError(key, f"{path}: expected an EC P-256 private key")
    return pk


def load_service_account(path: Path) -> dict[str, str]:
    """An FCM service-account file: project_id, client_email, private_key (RSA PEM)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = "fcm_credentials"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise PushKeyError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PushKeyError(key, f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PushKeyError(key, f"{path}: expected a JSON object")
    missing = [k for k in ("project_id", "client_email", "private_key")
               if not isinstance(data.get(k), str) or not data.get(k)]
    if missing:
        raise PushKeyError(key, f"{path}: missing {', '.join(missing)}")
    try:
        pk = load_pem_private_key(data["private_key"].encode(), None)
    except ValueError as exc:
        raise PushKeyError(key, f"{path}: private_key does not load ({exc})") from None
    if not isinstance(pk, rsa.RSAPrivateKey):
        raise PushKeyError(key, f"{path}: private_key must be an RSA key")
    return {k: str(v) for k, v in data.items() if isinstance(v, str)}

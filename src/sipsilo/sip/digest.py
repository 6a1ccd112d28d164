"""HTTP Digest authentication as SIP uses it: RFC 3261 §22, RFC 7616, RFC 8760.

Pure maths and header text only: parsing and building the ``WWW-Authenticate`` /
``Proxy-Authenticate`` challenges and the ``Authorization`` /
``Proxy-Authorization`` credentials, and computing HA1 and the request digest
for MD5 and SHA-256 (plain and ``-sess``) with ``qop=auth`` or no qop (RFC 2069
compatibility). ``qop=auth-int`` and ``userhash`` are not offered by sipsilo,
so they are parsed but not computed.

Nothing here compares secrets: the caller does, with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sipsilo.sip.errors import ParseError
from sipsilo.sip.grammar import TOKEN_CHARS, WS, quote

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "Credentials",
    "expected_response",
    "ha1",
    "hash_hex",
    "parse_challenge",
    "parse_credentials",
    "request_digest",
    "session_ha1",
]

# RFC 7616 §3.4.1 names, upper-case; the base hash of each.
ALGORITHMS: dict[str, str] = {
    "MD5": "md5",
    "MD5-SESS": "md5",
    "SHA-256": "sha256",
    "SHA-256-SESS": "sha256",
}

# Canonical spelling on the wire (RFC 7616 writes "-sess" in lower case).
_WIRE_NAME = {"MD5": "MD5", "MD5-SESS": "MD5-sess", "SHA-256": "SHA-256",
              "SHA-256-SESS": "SHA-256-sess"}


def _algo_key(algorithm: str | None) -> str:
    # RFC 2617 §3.2.1: an absent algorithm means MD5.
    key = (algorithm or "MD5").upper()
    if key not in ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return key


def hash_hex(algorithm: str | None, text: str) -> str:
    """H(text) in lower-case hex for the base hash of *algorithm*."""
    return hashlib.new(ALGORITHMS[_algo_key(algorithm)], text.encode("utf-8")).hexdigest()


def ha1(algorithm: str | None, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), what a subscriber table stores (Kamailio's ``ha1``).

    For a ``-sess`` algorithm this is still the stored value; see :func:`session_ha1`.
    """
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def session_ha1(algorithm: str | None, stored_ha1: str, nonce: str, cnonce: str) -> str:
    """The HA1 a request digest uses: ``H(HA1:nonce:cnonce)`` for ``-sess``, else HA1."""
    if _algo_key(algorithm).endswith("-SESS"):
        return hash_hex(algorithm, f"{stored_ha1}:{nonce}:{cnonce}")
    return stored_ha1


def request_digest(
    algorithm: str | None,
    ha1_value: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
) -> str:
    """The ``response`` value: KD(HA1, nonce:nc:cnonce:qop:HA2), or the RFC 2069 form.

    *ha1_value* is the stored HA1; the ``-sess`` step is applied here.
    """
    if qop not in (None, "auth"):
        raise ValueError(f"unsupported qop {qop!r}")
    key = _algo_key(algorithm)
    ha1s = session_ha1(key, ha1_value, nonce, cnonce)
    ha2 = hash_hex(key, f"{method}:{uri}")
    if qop is None:
        return hash_hex(key, f"{ha1s}:{nonce}:{ha2}")
    return hash_hex(key, f"{ha1s}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------- header text


def _parse_auth_params(value: str, header: str) -> tuple[str, dict[str, str]]:
    """``Scheme name=value, name="quoted", ...`` → (scheme, {lower-case name: value}).

    A linear scan (untrusted input): quoted values are unescaped, token values
    kept as they are. A repeated parameter is an error (RFC 7616 §3.3: each
    appears at most once), as is anything that is not a token or quoted-string.
    """
    text = value.strip(WS)
    i = 0
    n = len(text)
    while i < n and text[i] in TOKEN_CHARS:
        i += 1
    scheme = text[:i]
    if not scheme or (i < n and text[i] not in WS):
        raise ParseError(400, f"Bad {header} header")
    params: dict[str, str] = {}
    expect_item = True
    while True:
        while i < n and (text[i] in WS or text[i] == ","):
            if text[i] == ",":
                expect_item = True
            i += 1
        if i >= n:
            break
        if not expect_item:
            raise ParseError(400, f"Bad {header} header")
        start = i
        while i < n and text[i] in TOKEN_CHARS:
            i += 1
        name = text[start:i].lower()
        while i < n and text[i] in WS:
            i += 1
        if not name or i >= n or text[i] != "=":
            raise ParseError(400, f"Bad {header} header")
        i += 1
        while i < n and text[i] in WS:
            i += 1
        if i < n and text[i] == '"':
            out: list[str] = []
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(text[i])
                i += 1
            if i >= n:
                raise ParseError(400, f"Unterminated quoted string in {header}")
            i += 1
            val = "".join(out)
        else:
            start = i
            while i < n and text[i] in TOKEN_CHARS:
                i += 1
            val = text[start:i]
            if not val:
                raise ParseError(400, f"Bad {header} header")
        if name in params:
            raise ParseError(400, f"Repeated {name} in {header}")
        params[name] = val
        expect_item = False
    return scheme, params


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (scheme Digest)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)   # empty: no qop (RFC 2069 style)
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None

    def to_header(self) -> str:
        parts = [f"realm={quote(self.realm)}", f"nonce={quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        if self.domain is not None:
            parts.append(f"domain={quote(self.domain)}")
        # algorithm and stale are tokens; RFC 7616 §3.3 forbids quoting them.
        parts.append(f"algorithm={_WIRE_NAME.get(self.algorithm.upper(), self.algorithm)}")
        if self.qop:
            parts.append(f"qop={quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    scheme, p = _parse_auth_params(value, "WWW-Authenticate")
    if scheme.lower() != "digest":
        raise ParseError(400, f"Unsupported authentication scheme {scheme}")
    if "realm" not in p or "nonce" not in p:
        raise ParseError(400, "Digest challenge without realm or nonce")
    qop = tuple(q.strip() for q in p["qop"].split(",") if q.strip()) if "qop" in p else ()
    return Challenge(
        realm=p["realm"], nonce=p["nonce"], algorithm=p.get("algorithm", "MD5"), qop=qop,
        opaque=p.get("opaque"), stale=p.get("stale", "").lower() == "true",
        domain=p.get("domain"),
    )


@dataclass(frozen=True)
class Credentials:
    """One ``Authorization`` / ``Proxy-Authorization`` value (scheme Digest)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None          # 8 hex digits, as sent
    cnonce: str | None = None
    opaque: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # anything else, unused

    @property
    def nc_value(self) -> int | None:
        """The nonce-count as an integer; None when absent or not 8 hex digits."""
        if self.nc is None or len(self.nc) != 8:
            return None
        try:
            return int(self.nc, 16)
        except ValueError:
            return None

    def to_header(self) -> str:
        parts = [
            f"username={quote(self.username)}", f"realm={quote(self.realm)}",
            f"nonce={quote(self.nonce)}", f"uri={quote(self.uri)}",
            f"response={quote(self.response)}",
            f"algorithm={_WIRE_NAME.get(self.algorithm.upper(), self.algorithm)}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        if self.qop is not None:
            # qop and nc are unquoted in credentials (RFC 7616 §3.4).
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        return "Digest " + ", ".join(parts)


_CRED_FIELDS = ("username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc",
                "cnonce", "opaque")


def parse_credentials(value: str) -> Credentials:
    scheme, p = _parse_auth_params(value, "Authorization")
    if scheme.lower() != "digest":
        raise ParseError(400, f"Unsupported authentication scheme {scheme}")
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise ParseError(400, f"Digest credentials without {missing[0]}")
    qop = p.get("qop")
    if qop is not None and ("nc" not in p or "cnonce" not in p):
        # RFC 7616 §3.4: with qop, cnonce and nc are required.
        raise ParseError(400, "Digest credentials with qop but no nc or cnonce")
    return Credentials(
        username=p["username"], realm=p["realm"], nonce=p["nonce"], uri=p["uri"],
        response=p["response"], algorithm=p.get("algorithm", "MD5"), qop=qop,
        nc=p.get("nc"), cnonce=p.get("cnonce"), opaque=p.get("opaque"),
        extra={k: v for k, v in p.items() if k not in _CRED_FIELDS},
    )


def expected_response(creds: Credentials, stored_ha1: str, method: str) -> str:
    """The ``response`` the client must have sent, given the stored HA1.

    Raises ValueError for an algorithm or qop sipsilo does not compute.
    """
    return request_digest(
        creds.algorithm, stored_ha1, creds.nonce, method, creds.uri,
        qop=creds.qop, nc=creds.nc or "", cnonce=creds.cnonce or "",
    )

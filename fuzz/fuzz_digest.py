"""Fuzz target: digest authentication (sip/digest.py), header text and maths.

The first byte picks challenge or credentials; what parses must print back to
the same value, and for credentials the expected response must be computable
(ValueError is the documented answer for an algorithm or qop sipsilo does not
compute) and agree with hashlib computed here independently.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from harness import main, text

from sipsilo.sip.digest import (
    ALGORITHMS,
    Challenge,
    Credentials,
    expected_response,
    parse_challenge,
    parse_credentials,
)


def _h(algorithm: str, value: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm.upper()], value.encode()).hexdigest()


def _same(a: Challenge | Credentials, b: Challenge | Credentials) -> bool:
    # to_header() writes a known algorithm in its canonical spelling (MD5-sess);
    # the name is case-insensitive (RFC 7616 §3.3), so compare it that way
    return replace(a, algorithm=a.algorithm.upper()) == replace(b, algorithm=b.algorithm.upper())


def check(data: bytes) -> None:
    if not data:
        return
    value = text(data[1:])
    if data[0] % 2 == 0:
        ch = parse_challenge(value)
        again = parse_challenge(ch.to_header())
        assert _same(again, ch), (ch.to_header(), again, ch)
        return
    creds = parse_credentials(value)
    again = parse_credentials(creds.to_header())
    # to_header() leaves out the parameters sipsilo does not use (``extra``)
    assert _same(again, replace(creds, extra={})), (creds.to_header(), again, creds)
    creds.nc_value  # noqa: B018
    stored = "0123456789abcdef"
    try:
        got = expected_response(creds, stored, "REGISTER")
    except ValueError:
        assert creds.algorithm.upper() not in ALGORITHMS or creds.qop not in (None, "auth")
        return
    algo = creds.algorithm
    ha1 = stored
    if algo.upper().endswith("-SESS"):
        ha1 = _h(algo, f"{stored}:{creds.nonce}:{creds.cnonce or ''}")
    ha2 = _h(algo, f"REGISTER:{creds.uri}")
    if creds.qop is None:
        want = _h(algo, f"{ha1}:{creds.nonce}:{ha2}")
    else:
        want = _h(algo, f"{ha1}:{creds.nonce}:{creds.nc or ''}:{creds.cnonce or ''}:auth:{ha2}")
    assert got == want


if __name__ == "__main__":
    main(check)

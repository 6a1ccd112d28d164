"""Digest maths against the RFC examples, and the header text both ways."""

from __future__ import annotations

import pytest

from sipsilo.sip.digest import (
    Challenge,
    Credentials,
    expected_response,
    ha1,
    parse_challenge,
    parse_credentials,
    request_digest,
)
from sipsilo.sip.errors import ParseError

# RFC 7616 §3.9.1
R7616 = {
    "username": "Mufasa", "realm": "http-auth@example.org", "password": "Circle of Life",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "uri": "/dir/index.html", "nc": "00000001",
}


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    v = R7616
    h1 = ha1(algorithm, v["username"], v["realm"], v["password"])
    got = request_digest(algorithm, h1, v["nonce"], "GET", v["uri"], qop="auth", nc=v["nc"],
                         cnonce=v["cnonce"])
    assert got == expected


def test_rfc2617_example() -> None:
    h1 = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    got = request_digest(None, h1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET",
                         "/dir/index.html", qop="auth", nc="00000001", cnonce="0a4f113b")
    assert got == "6629fae49393a05397450978507c4ef1"


def test_rfc2617_example_header_parses_and_verifies() -> None:
    header = ('Digest username="Mufasa", realm="testrealm@host.com", '
              'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
              'qop=auth, nc=00000001, cnonce="0a4f113b", '
              'response="6629fae49393a05397450978507c4ef1", '
              'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    creds = parse_credentials(header)
    assert creds.nc_value == 1 and creds.algorithm == "MD5"
    h1 = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert expected_response(creds, h1, "GET") == creds.response


def test_sess_variants_differ_and_depend_on_cnonce() -> None:
    h1 = ha1("SHA-256", "bob", "example.com", "secret")
    assert ha1("SHA-256-sess", "bob", "example.com", "secret") == h1  # stored value
    plain = request_digest("SHA-256", h1, "n", "REGISTER", "sip:example.com", qop="auth",
                           nc="00000001", cnonce="c")
    sess = request_digest("SHA-256-sess", h1, "n", "REGISTER", "sip:example.com", qop="auth",
                          nc="00000001", cnonce="c")
    sess2 = request_digest("SHA-256-sess", h1, "n", "REGISTER", "sip:example.com", qop="auth",
                           nc="00000001", cnonce="d")
    assert len({plain, sess, sess2}) == 3
    assert len(request_digest("MD5-sess", ha1("MD5", "a", "b", "c"), "n", "M", "u",
                              qop="auth", nc="00000001", cnonce="c")) == 32


def test_rfc2069_form_without_qop() -> None:
    h1 = ha1("MD5", "bob", "r", "p")
    assert request_digest("MD5", h1, "n", "REGISTER", "sip:r") != request_digest(
        "MD5", h1, "n", "REGISTER", "sip:r", qop="auth", nc="00000001", cnonce="x")


def test_unsupported_algorithm_and_qop() -> None:
    with pytest.raises(ValueError):
        ha1("SHA-512-256-foo", "a", "b", "c")
    with pytest.raises(ValueError):
        request_digest("MD5", "x", "n", "M", "u", qop="auth-int", nc="1", cnonce="c")


def test_challenge_round_trip() -> None:
    c = Challenge(realm="example.com", nonce="abc+/=", algorithm="SHA-256", opaque="o",
                  stale=True)
    text = c.to_header()
    assert text.startswith("Digest ")
    assert "algorithm=SHA-256" in text and 'qop="auth"' in text and "stale=true" in text
    assert parse_challenge(text) == c


def test_challenge_rfc7616_text() -> None:
    text = ('Digest\r\n realm="http-auth@example.org", qop="auth, auth-int", '
            'algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
            'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    c = parse_challenge(text.replace("\r\n", ""))
    assert c.qop == ("auth", "auth-int") and c.algorithm == "SHA-256" and not c.stale


def test_credentials_round_trip_with_escapes() -> None:
    creds = Credentials(username='we"ird\\name', realm="r", nonce="n", uri="sip:r",
                        response="abc", algorithm="SHA-256-sess", qop="auth", nc="0000000a",
                        cnonce="cn", opaque="op")
    back = parse_credentials(creds.to_header())
    assert back == creds and back.nc_value == 10


@pytest.mark.parametrize("bad", [
    "", "Digest", 'Digest username="a"', 'Basic realm="x"', 'Digest realm="x", nonce="y',
    'Digest realm="x" nonce="y"', "Digest realm=, nonce=y",
    'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
    'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
])
def test_bad_credentials(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_credentials(bad)


def test_bad_nc_is_none() -> None:
    c = parse_credentials('Digest username="a", realm="r", nonce="n", uri="u", response="x", '
                          'qop=auth, nc=zz, cnonce="c"')
    assert c.nc_value is None

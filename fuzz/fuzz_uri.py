"""Fuzz target: SIP/SIPS URIs (sip/uri.py) -- parse, then print and parse back."""

from __future__ import annotations

from harness import main, text

from sipsilo.sip.uri import SipUri, canonical_host, parse_uri


def check(data: bytes) -> None:
    uri = parse_uri(text(data))
    if not isinstance(uri, SipUri):
        return  # an absolute URI of another scheme is kept as text
    printed = str(uri)
    again = SipUri.parse(printed)
    assert again == uri, f"round trip: {printed!r} -> {again!r} != {uri!r}"
    assert str(again) == printed
    uri.aor  # noqa: B018  (derived values must not raise either)
    uri.transport  # noqa: B018
    canonical_host(uri.host)


if __name__ == "__main__":
    main(check)

"""Fuzz target: name-addr headers (From/To/Contact/Route), Via, CSeq.

The first byte picks the parser, the rest is the header value. Whatever
parses prints back to something that parses to the same value.
"""

from __future__ import annotations

from harness import main, text

from sipsilo.sip.address import NameAddr, parse_contacts
from sipsilo.sip.message import parse_cseq
from sipsilo.sip.via import Via


def check(data: bytes) -> None:
    if not data:
        return
    which, value = data[0] % 4, text(data[1:])
    if which == 0:
        na = NameAddr.parse(value, "From")
        na.tag, na.expires, na.q  # noqa: B018  (derived values must not raise either)
        back = NameAddr.parse(str(na), "From")
        assert back.uri == na.uri and back.params == na.params, (str(na), back)
        assert (back.display_name or None) == (na.display_name or None), (str(na), back)
    elif which == 1:
        contacts = parse_contacts(value)
        if contacts != "*":
            for na in contacts:
                na.expires, na.q  # noqa: B018
            again = parse_contacts(", ".join(str(na) for na in contacts))
            assert again != "*" and [c.uri for c in again] == [c.uri for c in contacts]
    elif which == 2:
        via = Via.parse(value)
        assert Via.parse(str(via)) == via, (str(via), via)
    else:
        number, method = parse_cseq(value)
        assert parse_cseq(f"{number} {method}") == (number, method)


if __name__ == "__main__":
    main(check)

from __future__ import annotations

import calendar
import email.utils
import time

import pytest

from sipsilo.sip import ParseError, SipError, ctime_prefix, format_rfc1123
from sipsilo.sip.dates import parse_rfc1123
from sipsilo.sip.ids import new_branch, new_call_id, new_tag

TS = calendar.timegm((2026, 11, 26, 12, 38, 33, 0, 0, 0))


def test_rfc1123() -> None:
    assert format_rfc1123(TS) == "Thu, 26 Nov 2026 12:38:33 GMT"
    assert format_rfc1123(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert format_rfc1123(TS + 0.9) == format_rfc1123(TS)
    for ts in (0, 951782400, 1_700_000_000, TS):
        assert format_rfc1123(ts) == email.utils.formatdate(ts, usegmt=True)
        assert parse_rfc1123(format_rfc1123(ts)) == ts


def test_ctime_prefix() -> None:
    assert ctime_prefix(TS) == "Thu Nov 26 12:38:33 2026"
    assert len(ctime_prefix(TS)) == 24
    early = calendar.timegm((2026, 11, 6, 1, 2, 3, 0, 0, 0))
    assert ctime_prefix(early) == "Fri Nov  6 01:02:03 2026"
    assert ctime_prefix(early) == time.asctime(time.gmtime(early))


@pytest.mark.parametrize("bad", ["Fri, 01 Jan 2010 16:00:00 EST", "yesterday",
                                 "Fri 01 Jan 2010 16:00:00 GMT", "Fri, 01 Foo 2010 16:00:00 GMT",
                                 "Fri, 41 Jan 2010 16:00:00 GMT", "Fri, 01 Jan 2010 16:0x:00 GMT"])
def test_parse_rfc1123_bad(bad: str) -> None:
    with pytest.raises(ParseError, match="Bad Date header"):
        parse_rfc1123(bad)


def test_ids() -> None:
    b1, b2 = new_branch(), new_branch()
    assert b1.startswith("z9hG4bK") and b1 != b2 and len(b1) > 7 + 8
    assert new_tag() != new_tag() and len(new_tag()) >= 8
    cid = new_call_id("example.com")
    assert cid.endswith("@example.com") and new_call_id("") and "@" not in new_call_id("")


def test_errors() -> None:
    e = ParseError(400, "Bad CSeq header")
    assert (e.status, e.reason, e.answerable) == (400, "Bad CSeq header", True)
    assert str(e) == "400 Bad CSeq header" and isinstance(e, SipError)
    assert ParseError(413).reason == "Request Entity Too Large"
    assert ParseError("Bad thing").status == 400
    assert SipError(420, "Bad Extension").status == 420
    assert ParseError(400, "x", False).answerable is False


def test_date_with_an_out_of_range_year_is_a_parse_error() -> None:
    import pytest

    from sipsilo.sip.dates import parse_rfc1123
    from sipsilo.sip.errors import ParseError

    for text in ("Sat, 13 Nov 20100 23:29:00 GMT", "Sat, 13 Nov 0 23:29:00 GMT"):
        with pytest.raises(ParseError) as err:
            parse_rfc1123(text)
        assert err.value.reason == "Bad Date header"


def test_loop_branch_names_the_server_and_the_request_uri() -> None:
    from sipsilo.sip.ids import BRANCH_MAGIC, is_loop, loop_branch, new_token

    token = new_token()
    branch = loop_branch(token, "sip:bob@192.0.2.5:5070")
    assert branch.startswith(BRANCH_MAGIC + token + ".")
    assert is_loop(token, "sip:bob@192.0.2.5:5070", ["z9hG4bKother", branch])
    assert not is_loop(token, "sip:carol@192.0.2.5:5070", [branch])  # a spiral
    assert not is_loop(new_token(), "sip:bob@192.0.2.5:5070", [branch])  # another server
    assert loop_branch(token, "sip:x@y") != loop_branch(token, "sip:x@y")

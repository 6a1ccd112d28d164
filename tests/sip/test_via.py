from __future__ import annotations

import pytest

from sipsilo.sip import ParseError, Via


def test_simple_via() -> None:
    v = Via.parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport")
    assert (v.transport, v.host, v.port) == ("UDP", "192.0.2.1", 5060)
    assert v.branch == "z9hG4bK776" and v.rport == "" and v.rport_value is None
    assert v.received is None
    assert str(v) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport"


def test_lws_everywhere_and_ipv6() -> None:
    v = Via.parse("sip / 2.0 / tcp [2001:DB8::1] : 5070 ; Branch = z9hG4bKx ; received=10.0.0.1")
    assert v.transport == "TCP" and v.host == "2001:db8::1" and v.port == 5070
    assert v.params == [("branch", "z9hG4bKx"), ("received", "10.0.0.1")]
    assert v.sent_by() == "[2001:db8::1]:5070"
    assert str(v) == "SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKx;received=10.0.0.1"
    assert Via.parse("SIP/2.0/UDP host : 5060").port == 5060


def test_set_param_and_rport() -> None:
    v = Via.parse("SIP/2.0/UDP h;rport;branch=z9hG4bK1")
    v.set_param("received", "198.51.100.1")
    v.set_param("rport", "40000")
    assert str(v) == "SIP/2.0/UDP h;rport=40000;branch=z9hG4bK1;received=198.51.100.1"
    assert v.rport_value == 40000 and v.has_param("RPORT")
    v.remove_param("rport")
    assert v.rport is None
    c = v.copy()
    c.set_param("branch", "other")
    assert v.branch == "z9hG4bK1"


def test_other_version_still_parses() -> None:
    assert Via.parse("SIP/7.0/UDP h").protocol == "SIP/7.0"


@pytest.mark.parametrize(
    "bad",
    ["", "SIP/2.0 host", "SIP/2.0/UDP", "SIP/2.0/UDP ;branch=x", "SIP/2.0/UDP host;;",
     "SIP/2.0/UDP host:abc", "SIP/2.0/UDP ho st", "SIP/2.0/U@P host", "SIP/2.0/UDP [::1",
     "SIP/2.0/UDP host;branch="],
)
def test_bad_via(bad: str) -> None:
    with pytest.raises(ParseError, match="Bad Via header"):
        Via.parse(bad)


def test_rport_value_ignores_what_no_socket_takes() -> None:
    for bad in ("junk", "0", "65536", "99999999999", "-1", "1e3"):
        assert Via.parse(f"SIP/2.0/UDP h;rport={bad}").rport_value is None, bad
    assert Via.parse("SIP/2.0/UDP h;rport=65535").rport_value == 65535

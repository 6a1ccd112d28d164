

def test_replace_top_via_keeps_the_others_and_the_cache_consistent() -> None:
    from sipsilo.sip.parser import parse_message

    raw = (
        b"MESSAGE sip:a@b SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.4:5;branch=z9hG4bKx, SIP/2.0/TCP 192.0.2.8;branch=z9hG4bKy\r\n"
        b"From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    top = msg.vias[0].copy()
    top.set_param("received", "198.51.100.9")
    msg.replace_top_via(top)
    assert [v.received for v in msg.vias] == ["198.51.100.9", None]
    again = parse_message(msg.serialise())
    assert [str(v) for v in again.vias] == [str(v) for v in msg.vias]
    assert "SIP/2.0/TCP 192.0.2.8;branch=z9hG4bKy" in msg.serialise().decode()

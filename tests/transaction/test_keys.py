"""Transaction matching keys (RFC 3261 §17.1.3, §17.2.3)."""

from __future__ import annotations

import pytest

from sipsilo.sip.headers import Headers
from sipsilo.sip.message import Request
from sipsilo.transaction import cancel_target_key, client_key, request_client_key, server_key

from .messages import ack, request, response

OLD = "1a2b3c"  # an RFC 2543 branch: no magic cookie


def test_server_key_of_a_3261_request() -> None:
    assert server_key(request("INVITE")) == (
        "3261",
        "z9hG4bK776asdhds",
        "192.0.2.1",
        "5060",
        "INVITE",
    )


def test_retransmission_matches() -> None:
    assert server_key(request("MESSAGE")) == server_key(request("MESSAGE"))


def test_ack_maps_to_invite() -> None:
    invite = request("INVITE")
    assert server_key(ack(invite)) == server_key(invite)


def test_ack_for_2xx_with_new_branch_does_not_match() -> None:
    invite = request("INVITE")
    assert server_key(ack(invite, branch="z9hG4bKnew")) != server_key(invite)


def test_method_branch_and_sent_by_all_count() -> None:
    base = server_key(request("MESSAGE"))
    assert server_key(request("OPTIONS")) != base
    assert server_key(request("MESSAGE", branch="z9hG4bKother")) != base
    assert server_key(request("MESSAGE", sent_by="192.0.2.1:5070")) != base
    assert server_key(request("MESSAGE", sent_by="192.0.2.1")) != base
    assert server_key(request("MESSAGE", sent_by="[2001:db8::1]:5060")) != base
    # Same branch, other CSeq: a 3261 key ignores it (the branch decides).
    assert server_key(request("MESSAGE", cseq=1)) == base


def test_sent_by_host_is_case_insensitive() -> None:
    a = request("MESSAGE", sent_by="Proxy.Example.COM:5060")
    b = request("MESSAGE", sent_by="proxy.example.com:5060")
    assert server_key(a) == server_key(b)


def test_cancel_has_its_own_transaction_and_targets_the_invite() -> None:
    invite = request("INVITE")
    cancel = request("CANCEL")
    assert server_key(cancel) != server_key(invite)
    assert server_key(cancel)[-1] == "CANCEL"
    assert cancel_target_key(cancel) == server_key(invite)


def test_2543_key_matches_retransmission_ack_and_cancel() -> None:
    invite = request("INVITE", branch=OLD)
    key = server_key(invite)
    assert key[0] == "2543"
    assert server_key(request("INVITE", branch=OLD)) == key
    # The ACK carries the To tag of our response and still matches.
    assert server_key(ack(invite, to_tag="server-tag", branch=OLD)) == key
    cancel = request("CANCEL", branch=OLD)
    assert server_key(cancel) != key
    assert cancel_target_key(cancel) == key


def test_2543_key_distinguishes_cseq_uri_via_and_to_tag() -> None:
    base = server_key(request("MESSAGE", branch=OLD))
    assert server_key(request("MESSAGE", branch=OLD, cseq=2)) != base
    assert server_key(request("MESSAGE", branch=OLD, uri="sip:carol@example.com")) != base
    assert server_key(request("MESSAGE", branch=OLD, sent_by="192.0.2.9")) != base
    assert server_key(request("MESSAGE", branch=OLD, to_tag="x")) != base


def test_missing_branch_falls_back_to_2543() -> None:
    message = request("MESSAGE")
    message.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5060")
    assert server_key(message)[0] == "2543"


def test_client_key_matches_request_client_key() -> None:
    invite = request("INVITE")
    assert client_key(response(invite, 180)) == request_client_key(invite)
    assert client_key(response(invite, 200)) == ("z9hG4bK776asdhds", "INVITE")
    cancel = request("CANCEL")
    assert client_key(response(cancel, 200)) == ("z9hG4bK776asdhds", "CANCEL")
    assert client_key(response(cancel, 200)) != request_client_key(invite)


def test_no_via_is_a_value_error() -> None:
    bare = Request("MESSAGE", "sip:bob@example.com", Headers([("Call-ID", "x")]))
    with pytest.raises(ValueError):
        server_key(bare)
    with pytest.raises(ValueError):
        request_client_key(bare)

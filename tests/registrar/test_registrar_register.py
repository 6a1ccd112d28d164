"""Registrar.handle: RFC 3261 §10.3 rules, one behaviour per test."""

from __future__ import annotations

import asyncio

import pytest

from sipsilo.flow import Flow
from sipsilo.registrar import (
    Binding,
    MemoryLocationService,
    RegisterResult,
    Registrar,
    sweep,
)
from sipsilo.sip import parse_message
from sipsilo.sip.dates import format_rfc1123
from sipsilo.sip.errors import ParseError
from sipsilo.sip.message import Request

T0 = 1_700_000_000.0
AOR = "sip:alice@example.com"
FLOW = Flow("udp", ("192.0.2.1", 5060), ("192.0.2.10", 5060))
UA1 = "sip:alice@192.0.2.10:5060"
UA2 = "sip:alice@192.0.2.20:5062;transport=tcp"


def register(
    *extra: str,
    uri: str = "sip:example.com",
    to: str = "sip:alice@example.com",
    call_id: str = "cid-1@192.0.2.10",
    cseq: int = 1,
) -> Request:
    lines = [
        f"REGISTER {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-reg1",
        "Max-Forwards: 70",
        f"From: <{to}>;tag=from1",
        f"To: <{to}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def make_registrar(**kwargs: object) -> Registrar:
    kwargs.setdefault("domains", {"example.com"})
    return Registrar(MemoryLocationService(), **kwargs)  # type: ignore[arg-type]


def handle(
    reg: Registrar, request: Request, now: float = T0, flow: Flow = FLOW
) -> RegisterResult:
    return asyncio.run(reg.handle(request, flow, now))


def lookup(reg: Registrar, now: float = T0, aor: str = AOR) -> list[Binding]:
    return asyncio.run(reg.location.lookup(aor, now))


def status(result: RegisterResult) -> tuple[int, str]:
    return result.response.status, result.response.reason


def contacts(result: RegisterResult) -> list[str]:
    return result.response.headers.get_all("Contact")


# -- success paths ------------------------------------------------------------


def test_first_register_stores_binding_and_answers_200() -> None:
    reg = make_registrar()
    req = register(f"Contact: <{UA1}>", "User-Agent: phone/1.0")
    result = handle(reg, req)

    assert status(result) == (200, "OK")
    assert contacts(result) == [f"<{UA1}>;expires=3600"]
    assert result.response.headers.get("Date") == format_rfc1123(T0)
    assert result.response.to.tag  # §8.2.6.2: the UAS adds a To tag
    assert result.response.call_id == "cid-1@192.0.2.10"
    assert result.aor == AOR
    [b] = result.added
    assert result.dump_contacts == [b]
    assert result.removed == []
    assert (b.aor, b.contact, b.expires_at, b.q) == (AOR, UA1, T0 + 3600, 1.0)
    assert (b.call_id, b.cseq, b.user_agent, b.registered_at) == (
        "cid-1@192.0.2.10",
        1,
        "phone/1.0",
        T0,
    )
    assert b.flow == FLOW
    assert lookup(reg) == [b]


def test_to_tag_is_stable_for_a_retransmission() -> None:
    reg = make_registrar()
    first = handle(reg, register(f"Contact: <{UA1}>"))
    again = handle(reg, register(f"Contact: <{UA1}>", cseq=2))
    same = handle(reg, register(f"Contact: <{UA1}>", cseq=2), now=T0 + 1)
    assert first.response.to.tag != again.response.to.tag
    # the repeated CSeq is refused, but with the same tag as before
    assert status(same) == (500, "Out of order CSeq")
    assert same.response.to.tag == again.response.to.tag


def test_expires_header_applies_when_contact_has_none() -> None:
    reg = make_registrar()
    result = handle(reg, register(f"Contact: <{UA1}>", "Expires: 120"))
    assert contacts(result) == [f"<{UA1}>;expires=120"]
    assert result.added[0].expires_at == T0 + 120


def test_contact_expires_param_beats_expires_header() -> None:
    reg = make_registrar()
    result = handle(reg, register(f"Contact: <{UA1}>;expires=300, <{UA2}>", "Expires: 600"))
    assert sorted(contacts(result)) == sorted([f"<{UA1}>;expires=300", f"<{UA2}>;expires=600"])


def test_default_expires_when_neither_given() -> None:
    reg = make_registrar(default_expires=1800)
    result = handle(reg, register(f"Contact: <{UA1}>"))
    assert contacts(result) == [f"<{UA1}>;expires=1800"]


def test_expiry_above_max_is_capped() -> None:
    reg = make_registrar(max_expires=7200)
    result = handle(reg, register(f"Contact: <{UA1}>;expires=100000"))
    assert status(result) == (200, "OK")
    assert contacts(result) == [f"<{UA1}>;expires=7200"]
    assert result.added[0].expires_at == T0 + 7200


def test_several_contacts_all_listed_and_dumped() -> None:
    reg = make_registrar()
    result = handle(reg, register(f"Contact: <{UA1}>;q=0.5", f"Contact: <{UA2}>;expires=60"))
    assert status(result) == (200, "OK")
    # every binding listed, in lookup order (q desc)
    assert contacts(result) == [f"<{UA2}>;expires=60", f"<{UA1}>;expires=3600;q=0.5"]
    assert [b.contact for b in result.dump_contacts] == [UA2, UA1]
    assert {b.contact for b in result.added} == {UA1, UA2}


def test_200_lists_bindings_from_earlier_registers_with_remaining_time() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>", call_id="a"))
    result = handle(reg, register(f"Contact: <{UA2}>", call_id="b"), now=T0 + 100)
    assert contacts(result) == [f"<{UA2}>;expires=3600", f"<{UA1}>;expires=3500"]
    # only this request's contact is a dump target
    assert [b.contact for b in result.dump_contacts] == [UA2]


def test_other_contact_params_are_kept() -> None:
    reg = make_registrar()
    inst = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    result = handle(
        reg,
        register(f"Contact: <{UA1}>;+sip.instance={inst};reg-id=1;expires=600;q=0.7"),
    )
    assert contacts(result) == [f"<{UA1}>;expires=600;q=0.7;+sip.instance={inst};reg-id=1"]
    [b] = result.added
    assert b.instance_id == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    assert b.reg_id == 1


def test_query_without_contact_lists_current_bindings() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>;expires=600"))
    result = handle(reg, register(cseq=2), now=T0 + 60)
    assert status(result) == (200, "OK")
    assert contacts(result) == [f"<{UA1}>;expires=540"]
    assert result.response.headers.get("Date") == format_rfc1123(T0 + 60)
    assert (result.added, result.removed, result.dump_contacts) == ([], [], [])


def test_query_on_unknown_aor_is_empty_200() -> None:
    result = handle(make_registrar(), register())
    assert status(result) == (200, "OK")
    assert contacts(result) == []


def test_refresh_updates_expiry_flow_and_cseq() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>;expires=600"))
    other_flow = Flow("tcp", ("192.0.2.1", 5060), ("192.0.2.10", 41000), conn_id=3)
    result = handle(reg, register(f"Contact: <{UA1}>;expires=900", cseq=2), T0 + 10, other_flow)
    assert contacts(result) == [f"<{UA1}>;expires=900"]
    [b] = lookup(reg, T0 + 10)
    assert (b.cseq, b.expires_at, b.flow, b.registered_at) == (2, T0 + 910, other_flow, T0 + 10)
    assert result.added == [b]
    assert result.dump_contacts == [b]


def test_same_contact_twice_in_one_request_last_wins() -> None:
    reg = make_registrar()
    result = handle(reg, register(f"Contact: <{UA1}>;expires=100, <{UA1}>;expires=200"))
    assert contacts(result) == [f"<{UA1}>;expires=200"]
    assert len(result.added) == 1


def test_sips_aor_shares_sip_key_and_user_case_kept() -> None:
    reg = make_registrar()
    result = handle(reg, register(f"Contact: <{UA1}>", to="sips:Alice@EXAMPLE.com"))
    assert result.aor == "sip:Alice@example.com"
    assert lookup(reg, aor="sip:Alice@example.com")[0].contact == UA1
    assert lookup(reg, aor=AOR) == []


# -- expiry -------------------------------------------------------------------


def test_binding_disappears_on_time_and_sweep_frees_it() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>;expires=60", f"Contact: <{UA2}>;expires=120"))
    assert [b.contact for b in lookup(reg, T0 + 59)] == [UA1, UA2]
    assert [b.contact for b in lookup(reg, T0 + 60)] == [UA2]
    query = handle(reg, register(cseq=2), now=T0 + 60)
    assert contacts(query) == [f"<{UA2}>;expires=60"]
    swept = asyncio.run(sweep(reg.location, T0 + 60))
    assert [b.contact for b in swept] == [UA1]
    assert lookup(reg, T0 + 120) == []


# -- removal ------------------------------------------------------------------


def test_contact_expires_zero_removes_that_binding_only() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>, <{UA2}>"))
    result = handle(reg, register(f"Contact: <{UA1}>;expires=0", cseq=2), now=T0 + 5)
    assert status(result) == (200, "OK")
    assert contacts(result) == [f"<{UA2}>;expires=3595"]
    assert [b.contact for b in result.removed] == [UA1]
    assert result.added == [] and result.dump_contacts == []


def test_expires_header_zero_removes_listed_contacts() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>"))
    result = handle(reg, register(f"Contact: <{UA1}>", "Expires: 0", cseq=2))
    assert status(result) == (200, "OK")
    assert contacts(result) == []
    assert lookup(reg) == []


def test_removing_unknown_contact_is_fine() -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>;expires=0"))
    assert status(result) == (200, "OK")
    assert result.removed == []


def test_wildcard_removes_everything() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>, <{UA2}>"))
    result = handle(reg, register("Contact: *", "Expires: 0", cseq=2))
    assert status(result) == (200, "OK")
    assert contacts(result) == []
    assert sorted(b.contact for b in result.removed) == sorted([UA1, UA2])
    assert lookup(reg) == []


@pytest.mark.parametrize(
    "extra",
    [
        ("Contact: *", f"Contact: <{UA1}>", "Expires: 0"),
        (f"Contact: <{UA1}>", "Contact: *", "Expires: 0"),
        ("Contact: *", "Contact: *", "Expires: 0"),
    ],
)
def test_wildcard_mixed_with_contacts_is_refused_by_the_parser(extra: tuple[str, ...]) -> None:
    with pytest.raises(ParseError) as err:
        register(*extra, cseq=2)
    assert (err.value.status, err.value.reason) == (400, "Invalid wildcard Contact")


@pytest.mark.parametrize(
    "extra",
    [
        ("Contact: *",),  # no Expires
        ("Contact: *", "Expires: 60"),
        ("Contact: *", "Expires: 3600"),
    ],
)
def test_invalid_wildcard_is_400(extra: tuple[str, ...]) -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA2}>"))
    result = handle(reg, register(*extra, cseq=2))
    assert status(result) == (400, "Invalid wildcard Contact")
    assert [b.contact for b in lookup(reg)] == [UA2]  # nothing changed


# -- CSeq / Call-ID ordering --------------------------------------------------


@pytest.mark.parametrize("cseq", [5, 4])
def test_same_call_id_not_higher_cseq_is_500(cseq: int) -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>;expires=600", cseq=5))
    result = handle(reg, register(f"Contact: <{UA1}>;expires=0", cseq=cseq), now=T0 + 1)
    assert status(result) == (500, "Out of order CSeq")
    assert "Contact" not in result.response.headers
    [b] = lookup(reg, T0 + 1)  # untouched
    assert (b.cseq, b.expires_at) == (5, T0 + 600)
    assert (result.added, result.removed) == ([], [])


def test_out_of_order_contact_aborts_whole_request() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>", cseq=5))
    result = handle(reg, register(f"Contact: <{UA2}>, <{UA1}>", cseq=3))
    assert status(result) == (500, "Out of order CSeq")
    assert [b.contact for b in lookup(reg)] == [UA1]


def test_higher_cseq_same_call_id_updates() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>", cseq=5))
    result = handle(reg, register(f"Contact: <{UA1}>;expires=100", cseq=6))
    assert contacts(result) == [f"<{UA1}>;expires=100"]


def test_other_call_id_overwrites_regardless_of_cseq() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>", cseq=50, call_id="old"))
    result = handle(reg, register(f"Contact: <{UA1}>;expires=100", cseq=1, call_id="rebooted"))
    assert status(result) == (200, "OK")
    [b] = lookup(reg)
    assert (b.call_id, b.cseq) == ("rebooted", 1)


def test_wildcard_with_stale_cseq_is_500() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>", cseq=7))
    result = handle(reg, register("Contact: *", "Expires: 0", cseq=7))
    assert status(result) == (500, "Out of order CSeq")
    assert len(lookup(reg)) == 1


# -- refusals -----------------------------------------------------------------


def test_interval_too_brief_is_423_with_min_expires() -> None:
    reg = make_registrar(min_expires=60)
    result = handle(reg, register(f"Contact: <{UA2}>", f"Contact: <{UA1}>;expires=30"))
    assert status(result) == (423, "Interval Too Brief")
    assert result.response.headers.get("Min-Expires") == "60"
    assert result.response.to.tag
    assert lookup(reg) == []  # the valid contact was not saved either


def test_expires_header_too_brief_is_423() -> None:
    result = handle(make_registrar(min_expires=300), register(f"Contact: <{UA1}>", "Expires: 299"))
    assert status(result) == (423, "Interval Too Brief")
    assert result.response.headers.get("Min-Expires") == "300"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "10 20"])
def test_bad_expires_header_is_400(value: str) -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>", f"Expires: {value}"))
    assert status(result) == (400, "Bad Expires header")


@pytest.mark.parametrize("param", ["expires=soon", "expires", "expires=-5"])
def test_bad_contact_expires_param_is_400(param: str) -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>;{param}"))
    assert status(result) == (400, "Bad Contact header - invalid expires parameter")


@pytest.mark.parametrize("q", ["1.5", "-0.1", "abc", "0.1234", "2"])
def test_bad_q_is_400(q: str) -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>;q={q}"))
    assert status(result) == (400, "Bad Contact header - invalid q-value")


@pytest.mark.parametrize("q", ["0", "0.0", "0.25", "1", "1.000"])
def test_valid_q_values(q: str) -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>;q={q}"))
    assert status(result) == (200, "OK")
    assert result.added[0].q == float(q)


def test_unparsable_contact_is_refused_naming_contact() -> None:
    # Contact is checked when the REGISTER is parsed, before the registrar.
    with pytest.raises(ParseError) as err:
        register("Contact: <sip:alice@192.0.2.10")
    assert err.value.status == 400
    assert "Contact" in err.value.reason


def test_bad_reg_id_is_400() -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>;reg-id=x"))
    assert status(result) == (400, "Bad Contact header - invalid reg-id")


def test_foreign_request_uri_domain_is_403() -> None:
    reg = make_registrar()
    req = register(f"Contact: <{UA1}>", uri="sip:other.org", to="sip:alice@other.org")
    assert not reg.serves(req)
    result = handle(reg, req)
    assert status(result) == (403, "Forbidden - domain not served")
    assert result.aor is None


def test_foreign_to_domain_is_403() -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>", to="sip:alice@other.org"))
    assert status(result) == (403, "Forbidden - domain not served")


def test_domain_policy_may_be_a_callable() -> None:
    reg = make_registrar(domains=lambda host: host.endswith(".example.com"))
    ok = handle(reg, register(uri="sip:a.example.com", to="sip:alice@a.example.com"))
    no = handle(reg, register(uri="sip:example.com"))
    assert status(ok) == (200, "OK")
    assert status(no) == (403, "Forbidden - domain not served")


def test_domain_set_is_case_insensitive_and_none_serves_all() -> None:
    assert status(handle(make_registrar(domains={"EXAMPLE.com"}), register())) == (200, "OK")
    reg = make_registrar(domains=None)
    assert status(handle(reg, register(uri="sip:x.net", to="sip:a@y.net"))) == (200, "OK")


def test_non_sip_to_uri_is_404() -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>", to="tel:+15551234"))
    assert status(result) == (404, "Not Found - To URI is not a SIP URI")


def test_to_without_user_is_404() -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>", to="sip:example.com"))
    assert status(result) == (404, "Not Found - To URI has no user part")


def test_non_sip_request_uri_is_416() -> None:
    result = handle(make_registrar(), register(uri="tel:+15551234"))
    assert status(result) == (416, "Unsupported URI Scheme")


def test_unsupported_require_is_420() -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>", "Require: path, foo"))
    assert status(result) == (420, "Bad Extension")
    assert result.response.headers.get_all("Unsupported") == ["path", "foo"]


def test_supported_require_passes() -> None:
    reg = make_registrar(supported={"path"})
    result = handle(reg, register(f"Contact: <{UA1}>", "Require: path"))
    assert status(result) == (200, "OK")


def test_max_contacts_refuses_new_but_allows_refresh() -> None:
    reg = make_registrar(max_contacts=1)
    handle(reg, register(f"Contact: <{UA1}>"))
    refused = handle(reg, register(f"Contact: <{UA2}>", cseq=2))
    assert status(refused) == (403, "Too many registered contacts")
    assert [b.contact for b in lookup(reg)] == [UA1]
    refresh = handle(reg, register(f"Contact: <{UA1}>;expires=100", cseq=3))
    assert status(refresh) == (200, "OK")
    # swapping one contact for another within the limit is allowed
    swap = handle(reg, register(f"Contact: <{UA1}>;expires=0, <{UA2}>", cseq=4))
    assert status(swap) == (200, "OK")
    assert [b.contact for b in lookup(reg)] == [UA2]


def test_max_contacts_ignores_expired_bindings() -> None:
    reg = make_registrar(max_contacts=1)
    handle(reg, register(f"Contact: <{UA1}>;expires=60"))
    result = handle(reg, register(f"Contact: <{UA2}>", cseq=2), now=T0 + 61)
    assert status(result) == (200, "OK")


def test_non_register_is_a_programming_error() -> None:
    req = register()
    req.method = "OPTIONS"
    with pytest.raises(ValueError):
        handle(make_registrar(), req)


def test_store_failure_is_500_not_an_exception() -> None:
    class Broken(MemoryLocationService):
        async def save(self, binding: Binding) -> None:
            raise OSError("disk full")

    reg = Registrar(Broken(), domains={"example.com"})
    result = handle(reg, register(f"Contact: <{UA1}>"))
    assert status(result) == (500, "Server Error - location service failure")


# -- recorded attributes ------------------------------------------------------


def test_methods_from_contact_param_win_over_allow() -> None:
    reg = make_registrar()
    result = handle(
        reg,
        register(
            f'Contact: <{UA1}>;methods="INVITE,MESSAGE"',
            f"Contact: <{UA2}>",
            "Allow: INVITE, ACK, BYE",
            "Allow: message",
        ),
    )
    by_contact = {b.contact: b.methods for b in result.added}
    assert by_contact == {
        UA1: frozenset({"INVITE", "MESSAGE"}),
        UA2: frozenset({"INVITE", "ACK", "BYE", "MESSAGE"}),
    }


def test_methods_none_without_param_or_allow() -> None:
    result = handle(make_registrar(), register(f"Contact: <{UA1}>"))
    assert result.added[0].methods is None
    assert result.added[0].user_agent is None


def test_instance_and_reg_id_replace_old_contact() -> None:
    reg = make_registrar()
    inst = '"<urn:uuid:1>"'
    handle(reg, register(f"Contact: <{UA1}>;+sip.instance={inst};reg-id=1"))
    result = handle(
        reg, register(f"Contact: <{UA2}>;+sip.instance={inst};reg-id=1", cseq=2), T0 + 1
    )
    assert status(result) == (200, "OK")
    assert [b.contact for b in result.removed] == [UA1]
    assert [b.contact for b in lookup(reg, T0 + 1)] == [UA2]


def test_q_ordering_and_recency_in_lookup() -> None:
    reg = make_registrar()
    handle(reg, register(f"Contact: <{UA1}>;q=0.5", call_id="a"))
    handle(reg, register("Contact: <sip:alice@198.51.100.1>;q=0.9", call_id="b"), T0 + 1)
    handle(reg, register(f"Contact: <{UA2}>;q=0.5", call_id="c"), T0 + 2)
    found = [b.contact for b in lookup(reg, T0 + 3)]
    assert found == ["sip:alice@198.51.100.1", UA2, UA1]


def test_concurrent_registers_for_one_aor_take_turns() -> None:
    class Slow(MemoryLocationService):
        """Yields to the loop on every call, like a SQL backend would."""

        async def lookup(self, aor: str, now: float) -> list[Binding]:
            await asyncio.sleep(0)
            return await super().lookup(aor, now)

        async def save(self, binding: Binding) -> None:
            await asyncio.sleep(0)
            await super().save(binding)

    reg = Registrar(Slow(), domains={"example.com"}, max_contacts=1)

    async def go() -> list[RegisterResult]:
        return list(
            await asyncio.gather(
                reg.handle(register(f"Contact: <{UA1}>", call_id="a"), FLOW, T0),
                reg.handle(register(f"Contact: <{UA2}>", call_id="b"), FLOW, T0),
            )
        )

    results = asyncio.run(go())
    assert sorted(r.response.status for r in results) == [200, 403]
    assert len(lookup(reg)) == 1
    assert len(reg._locks) == 0  # no lock left behind per AoR

"""The verdict on one request: challenges, ownership, failures and blocking, replays."""

from __future__ import annotations

import asyncio

import pytest

from sipsilo.auth.identity import Identity
from sipsilo.auth.nonce import NonceManager
from sipsilo.auth.policy import (
    Authenticator,
    FailureTracker,
    Verdict,
    consume_credentials,
    failure_key,
)
from sipsilo.auth.subscribers import Subscriber, hashes
from sipsilo.config import ConfigError, load_config
from sipsilo.sip.digest import Credentials, ha1, parse_challenge, request_digest
from sipsilo.sip.message import Request
from sipsilo.sip.parser import parse_message

REALM = "example.com"
NOW = 1_000_000.0
SRC = ("192.0.2.7", 5060)


class Users:
    def __init__(self, **passwords: str) -> None:
        self.rows = {
            name: Subscriber(i, name, REALM, "", *hashes(name, REALM, REALM, pw))
            for i, (name, pw) in enumerate(passwords.items(), 1)
        }
        self.lookups = 0

    def get(self, username: str, domain: str) -> Subscriber | None:
        self.lookups += 1
        return self.rows.get(username) if domain == REALM else None


def make_auth(**kw: object) -> Authenticator:
    nonces = NonceManager(b"s" * 32, REALM, expires=300)
    kw.setdefault("algorithms", ("SHA-256", "MD5"))
    return Authenticator(Users(bob="secret", alice="pw"), REALM, nonces, **kw)  # type: ignore[arg-type]


def request(method: str = "REGISTER", user: str = "bob", auth: str | None = None) -> Request:
    lines = [
        f"{method} sip:{REALM} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1",
        f"From: <sip:{user}@{REALM}>;tag=1",
        f"To: <sip:{'carol' if method != 'REGISTER' else user}@{REALM}>",
        "Call-ID: c1", f"CSeq: 1 {method}", "Max-Forwards: 70",
    ]
    if auth:
        lines.append(f"{'Authorization' if method == 'REGISTER' else 'Proxy-Authorization'}: "
                     f"{auth}")
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def answer(v: Verdict, user: str = "bob", password: str = "secret", method: str = "REGISTER",
           nc: int = 1, index: int = 0, username: str | None = None) -> str:
    ch = parse_challenge(v.headers[index][1])
    h1 = ha1(ch.algorithm, user, REALM, password)
    uri = f"sip:{REALM}"
    resp = request_digest(ch.algorithm, h1, ch.nonce, method, uri, qop="auth",
                          nc=f"{nc:08x}", cnonce="abc")
    return Credentials(username or user, REALM, ch.nonce, uri, resp, ch.algorithm, "auth",
                       f"{nc:08x}", "abc").to_header()


def check(auth: Authenticator, req: Request, now: float = NOW, src: tuple[str, int] = SRC
          ) -> Verdict:
    return asyncio.run(auth.check(req, src, www=req.method == "REGISTER", now=now))


def test_challenge_offers_sha256_then_md5_with_one_nonce() -> None:
    v = check(make_auth(), request())
    assert (v.ok, v.status) == (False, 401)
    names = [n for n, _ in v.headers]
    algos = [parse_challenge(h).algorithm for _, h in v.headers]
    assert names == ["WWW-Authenticate"] * 2 and algos == ["SHA-256", "MD5"]
    assert len({parse_challenge(h).nonce for _, h in v.headers}) == 1
    v407 = check(make_auth(), request("MESSAGE"))
    assert v407.status == 407 and v407.headers[0][0] == "Proxy-Authenticate"


@pytest.mark.parametrize("index", [0, 1])
def test_right_password_either_algorithm(index: int) -> None:
    auth = make_auth()
    v = check(auth, request(auth=answer(check(auth, request()), index=index)))
    assert v.ok and v.identity == f"sip:bob@{REALM}"


def test_username_may_carry_the_domain() -> None:
    auth = make_auth()
    v = check(auth, request(auth=answer(check(auth, request()), username=f"bob@{REALM}")))
    assert v.ok


def test_wrong_password_and_unknown_user_get_the_same_challenge() -> None:
    auth = make_auth()
    wrong = check(auth, request(auth=answer(check(auth, request()), password="nope")))
    unknown = check(auth, request(user="nobody",
                                  auth=answer(check(auth, request()), user="nobody")))
    for v in (wrong, unknown):
        assert v.status == 401 and [n for n, _ in v.headers] == ["WWW-Authenticate"] * 2
        assert not parse_challenge(v.headers[0][1]).stale
    assert auth.subscribers.lookups == 2  # type: ignore[attr-defined]


def test_bobs_credentials_for_alices_aor_are_answered_as_a_wrong_password() -> None:
    auth = make_auth(max_failures=2)
    wrong = check(auth, request(user="alice", auth=answer(check(auth, request(user="alice")),
                                                          user="alice", password="x")))
    creds = answer(check(auth, request(user="alice")), user="bob")
    v = check(auth, request(user="alice", auth=creds))
    assert (v.status, v.reason, [n for n, _ in v.headers]) == (
        wrong.status, wrong.reason, [n for n, _ in wrong.headers]) == (
        401, "Unauthorized", ["WWW-Authenticate"] * 2)
    m = check(auth, request("MESSAGE", user="alice",
                            auth=answer(check(auth, request("MESSAGE")), method="MESSAGE")))
    assert (m.status, m.reason) == (407, "Proxy Authentication Required")
    # and counted as failures of bob's account: the next try as bob is refused unverified
    blocked = check(auth, request(auth=answer(check(auth, request()))))
    assert blocked.status == 403 and "too many" in blocked.reason


@pytest.mark.parametrize("username", ["bob", "bob@", f"bob@{REALM}", f"bob@{REALM.upper()}",
                                      f"b%6Fb@{REALM}", f"bob@{REALM}:5060"])
def test_spellings_of_one_account_share_one_budget(username: str) -> None:
    auth = make_auth(max_failures=1)
    bad = answer(check(auth, request()), password="x")
    assert check(auth, request(auth=bad)).status == 401
    v = check(auth, request(auth=answer(check(auth, request()), username=username)))
    assert v.status == 403 and "too many" in v.reason


@pytest.mark.parametrize("username", ["bob ", "BOB", f"bob@{REALM} ", f"bob@other.{REALM}"])
def test_other_accounts_are_not_bobs(username: str) -> None:
    auth = make_auth()
    v = check(auth, request(auth=answer(check(auth, request()), username=username)))
    assert (v.ok, v.status) == (False, 401)


def test_default_algorithms_are_md5_only() -> None:
    nonces = NonceManager(b"s" * 32, REALM, expires=300)
    v = check(Authenticator(Users(bob="secret"), REALM, nonces), request())
    assert [parse_challenge(h).algorithm for _, h in v.headers] == ["MD5"]


def test_replayed_nonce_count_is_refused_then_higher_nc_accepted() -> None:
    auth = make_auth()
    ch = check(auth, request())
    creds = answer(ch)
    assert check(auth, request(auth=creds)).ok
    again = check(auth, request(auth=creds))
    assert again.status == 401 and parse_challenge(again.headers[0][1]).stale
    assert check(auth, request(auth=answer(ch, nc=2))).ok


def test_expired_nonce_right_password_gets_stale_true() -> None:
    auth = make_auth()
    creds = answer(check(auth, request(), now=NOW))
    v = check(auth, request(auth=creds), now=NOW + 301)
    assert v.status == 401 and all(parse_challenge(h).stale for _, h in v.headers)


def test_forged_nonce_gets_a_plain_challenge_without_lookup() -> None:
    auth = make_auth()
    creds = Credentials("bob", REALM, "bm90IG91cnM=", "sip:x", "0" * 32, "MD5", "auth",
                        "00000001", "c").to_header()
    v = check(auth, request(auth=creds))
    assert v.status == 401 and auth.subscribers.lookups == 0  # type: ignore[attr-defined]


def test_failures_block_the_source_without_verifying() -> None:  # as that user
    auth = make_auth(max_failures=3, block_time=60)
    good = answer(check(auth, request()))
    for _ in range(3):
        v = check(auth, request(auth=answer(check(auth, request()), password="x")))
        assert v.status == 401
    before = auth.subscribers.lookups  # type: ignore[attr-defined]
    # without credentials there is no user to block: the challenge as ever
    assert check(auth, request()).status == 401
    v = check(auth, request(auth=good))
    assert v.status == 403 and "too many" in v.reason
    assert auth.subscribers.lookups == before  # type: ignore[attr-defined]
    # another source is not affected; the blocked one is let in again after block_time
    other = ("192.0.2.8", 1)
    assert check(auth, request(auth=answer(check(auth, request(), src=other))), src=other).ok
    assert check(auth, request(auth=good), now=NOW + 61).ok


def test_failure_tracker_success_resets_and_zero_disables() -> None:
    t = FailureTracker(2, 10)
    assert not t.failure("a", 0)
    t.success("a")
    assert not t.failure("a", 1) and t.failure("a", 2) and t.blocked_until("a", 3) == 12
    off = FailureTracker(0, 10)
    assert not any(off.failure("a", i) for i in range(10)) and off.blocked_until("a", 0) is None


def test_a_flood_of_other_failures_does_not_evict_a_block() -> None:
    # failing as 10 made-up accounts must not push bob's block out of the bounded table
    t = FailureTracker(2, 10, max_sources=3)
    assert not t.failure("bob", 0) and t.failure("bob", 1)
    for i in range(10):
        t.failure(f"x{i}", 2 + i / 10)
    assert t.blocked_until("bob", 5) == 11
    assert t.blocked_until("bob", 11) is None  # and it still ends on time
    t.success("x9")
    assert t.blocked_until("x9", 5) is None


def test_trusted_networks() -> None:
    auth = make_auth(trusted=("10.0.0.0/8", "2001:db8::/32"))
    assert auth.is_trusted("10.1.2.3") and auth.is_trusted("2001:db8::1")
    assert not auth.is_trusted("192.0.2.7") and not auth.is_trusted("bogus")


def test_consume_credentials_keeps_other_realms() -> None:
    req = request("MESSAGE", auth='Digest username="a", realm="example.com", nonce="n", '
                  'uri="u", response="r"')
    req.headers.add("Proxy-Authorization", 'Digest username="a", realm="other", nonce="n", '
                    'uri="u", response="r"')
    consume_credentials(req, REALM)
    assert [v for v in req.headers.get_all("Proxy-Authorization")] == [
        'Digest username="a", realm="other", nonce="n", uri="u", response="r"']


def test_auth_config() -> None:
    cfg = load_config(None, ["server.domains=[\"example.com\", \"b.org\"]"], env={})
    assert cfg.auth.enabled == "auto" and cfg.auth_realm() == "example.com"
    assert cfg.auth.algorithms == ["MD5"] and cfg.auth.nonce_expires == 300
    cfg = load_config(None, ["auth.enabled=false", "auth.realm=r", "auth.trusted=10.1.0.0/16",
                             'auth.algorithms=["SHA-256", "MD5"]'], env={})
    assert cfg.auth.enabled is False and cfg.auth_realm() == "r"
    assert cfg.auth.trusted == ["10.1.0.0/16"] and cfg.auth.algorithms == ["SHA-256", "MD5"]
    for bad, text in [("auth.enabled=maybe", 'auth.enabled: expected true, false or "auto"'),
                      ("auth.trusted=[\"10.0.0.300/8\"]", "auth.trusted[0]: not a network"),
                      ("auth.algorithms=[]", "auth.algorithms"),
                      ("auth.algorithms=[\"SHA-1\"]", "auth.algorithms"),
                      ("auth.block_time=0", "auth.block_time"),
                      ("auth.realm=\"a\\\"b\"", "auth.realm: bad realm"),
                      ("auth.db_table=\"a;b\"", "auth.db_table")]:
        with pytest.raises(ConfigError, match=text.replace("[", r"\[").replace("]", r"\]")):
            load_config(None, [bad], env={})


def test_block_is_per_source_and_username() -> None:
    # A spoofer failing as one user from a shared (NAT) address does not lock
    # the other users behind that address out; the failing user is blocked.
    auth = make_auth(max_failures=3, block_time=60)
    for _ in range(3):
        bad = answer(check(auth, request(user="alice")), user="alice", password="x")
        assert check(auth, request(user="alice", auth=bad)).status == 401
    blocked = check(auth, request(user="alice", auth=answer(check(auth, request(user="alice")),
                                                            user="alice", password="pw")))
    assert blocked.status == 403 and "too many" in blocked.reason
    assert check(auth, request(auth=answer(check(auth, request())))).ok


def test_digest_uri_must_be_the_request_uri() -> None:
    auth = make_auth()
    creds = answer(check(auth, request())).replace(f'uri="sip:{REALM}"',
                                                  'uri="sip:elsewhere.example.org"')
    assert 'uri="sip:elsewhere.example.org"' in creds
    v = check(auth, request(auth=creds))
    assert (v.ok, v.status, v.reason) == (False, 400, "Bad Authorization header - uri mismatch")
    assert auth.failures.blocked_until(failure_key(SRC[0], Identity("bob", REALM)), NOW) is None

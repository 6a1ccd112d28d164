"""The compiled SIP core (setup.py, SIPSILO_MYPYC=1) answers exactly as the pure-Python one.

Runs only where a compiled build exists: the one scripts/serve.sh keeps in
``.venv/sipsilo-core`` (skipped when the core's sources changed since), or the
directory named by SIPSILO_CORE (for instance ``SIPSILO_MYPYC=1 pip install
--no-deps --target DIR .``), which must match the sources. The same cases go
through both builds, the compiled one in a child process, and the results
must be equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

REQUESTS = [
    # a MESSAGE as the server stores it
    b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-1a2b;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=a1b2\r\n'
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: 4b1c-9e2d@192.0.2.10\r\n"
    b"CSeq: 1 MESSAGE\r\n"
    b"Content-Type: text/plain;charset=UTF-8\r\n"
    b"Content-Length: 11\r\n\r\nHello, Bob!",
    # compact names, folding, two Vias on one line, a REGISTER with Contact and expires
    b"REGISTER sips:example.com SIP/2.0\r\n"
    b"v: SIP/2.0/TLS [2001:db8::10]:5061;branch=z9hG4bK-r1,\r\n"
    b" SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-r0;received=198.51.100.7\r\n"
    b"f: Bob <sips:bob@example.com>;tag=77\r\n"
    b"t: Bob <sips:bob@example.com>\r\n"
    b"i: reg-1@host\r\n"
    b"CSeq: 42 REGISTER\r\n"
    b"m: <sip:bob@192.0.2.20:5062;transport=tcp>;expires=600;q=0.5,"
    b" <sip:%62ob@host;lr>\r\n"
    b"Authorization: Digest username=\"bob\", realm=\"example.com\", nonce=\"n0\","
    b" uri=\"sips:example.com\", response=\"0123456789abcdef0123456789abcdef\","
    b" qop=auth, nc=00000001, cnonce=\"c0\"\r\n"
    b"l: 0\r\n\r\n",
    # a response, relayed
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-1a2b\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b2\r\n"
    b"Call-ID: x@y\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n",
    # errors: their status, reason, and whether they are answered
    b"MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-e\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\n"
    b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"MESSAGE sip:bob@example.com SIP/3.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-v\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n\r\n",
    b"garbage\r\n\r\n",
]


def results() -> list[object]:
    """What the core makes of each case: parsed views, the answer, its wire form."""
    from sipsilo.sip import Request, parse_message
    from sipsilo.sip.digest import parse_credentials
    from sipsilo.sip.errors import ParseError
    from sipsilo.sip.parser import error_response
    from sipsilo.transaction import NonInviteServerTransaction, server_key

    out: list[object] = []
    for data in REQUESTS:
        try:
            msg = parse_message(data)
        except ParseError as exc:
            answer = error_response(data, exc)
            out.append(["error", exc.status, exc.reason, exc.answerable,
                        None if answer is None else answer.serialise().decode()])
            continue
        row: list[object] = [msg.start_line(), [str(v) for v in msg.vias], str(msg.from_),
                             str(msg.to), msg.to.tag, msg.call_id, list(msg.cseq),
                             msg.body.decode(), msg.serialise().decode()]
        if isinstance(msg, Request):
            contacts = msg.contacts
            row.append(contacts if contacts == "*" else
                       [[str(c), c.expires, c.q] for c in contacts])
            auth = msg.headers.get("Authorization")
            if auth is not None:
                creds = parse_credentials(auth)
                row.append([creds.username, creds.realm, creds.uri, creds.nc_value])
            machine = NonInviteServerTransaction(msg, False)
            effects = machine.start() + machine.on_tu_response(
                msg.make_response(202, to_tag="t0"))
            row.append([list(server_key(msg)), [type(e).__name__ for e in effects],
                        msg.make_response(202, to_tag="t0").serialise().decode(),
                        machine.state.value, list(machine.armed_timers)])
        out.append(row)
    return out


def _compiled_build() -> Path | None:
    named = os.environ.get("SIPSILO_CORE")
    if named:
        return Path(named)
    default = ROOT / ".venv" / "sipsilo-core"
    return default if default.is_dir() else None


def _stale(build: Path) -> list[str]:
    """Core sources that changed since ``build`` was made (it keeps a copy of them)."""
    src = ROOT / "src"
    return [str(path.relative_to(src)) for pkg in ("sip", "transaction")
            for path in sorted((src / "sipsilo" / pkg).glob("*.py"))
            if not (build / path.relative_to(src)).is_file()
            or (build / path.relative_to(src)).read_bytes() != path.read_bytes()]


def test_compiled_core_answers_as_the_pure_one() -> None:
    build = _compiled_build()
    if build is None:
        pytest.skip("no compiled core built (scripts/serve.sh or SIPSILO_CORE=DIR)")
    stale = _stale(build)
    if stale and "SIPSILO_CORE" not in os.environ:
        pytest.skip(f"the compiled core in {build} predates {stale[0]}: run scripts/serve.sh")
    assert not stale, f"{build} was built from other sources: {stale}"
    script = (
        "import json, sys, sipsilo.sip as s\n"
        "assert s.compiled(), s.core_build()\n"
        "from tests.sip.test_compiled_core import results\n"
        "print(json.dumps(results()))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(build), str(ROOT)]))
    child = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == json.loads(json.dumps(results()))


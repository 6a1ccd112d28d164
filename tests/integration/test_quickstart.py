"""The README's quick start, run as a newcomer pastes it: the install-and-run command,
then the walkthrough block line by line, with nothing left behind in the checkout.

Only the listen address and the data dir are redirected (environment variables the
CLI documents), so that the test neither needs port 5060 nor writes in the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def quick_start_blocks() -> list[list[str]]:
    """The command lines of each ```sh block of the Quick start section."""
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    section = section[:section.index("\n## ", 3)]
    return [[line for line in block.splitlines() if line.strip()]
            for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


@pytest.mark.timeout(900)  # the first run installs .venv
def test_readme_quick_start_and_walkthrough_as_written(tmp_path: Path) -> None:
    install, walkthrough = quick_start_blocks()
    serve_line = install[0].split("#")[0].strip()
    assert serve_line == "./scripts/serve.sh"
    assert install[1].startswith("./scripts/test.sh")  # (this is it, running)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSILO_")}
    env.update({"SIPSILO_SERVER__LISTEN": f'["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]',
                "SIPSILO_DATA_DIR": str(tmp_path)})
    log = open(tmp_path / "serve.log", "w+b")  # noqa: SIM115 - the child writes it
    serve = subprocess.Popen(["bash", "-c", serve_line], cwd=ROOT, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The first run installs .venv: minutes on a slow machine, bounded all the same.
        deadline = time.monotonic() + 600
        while b"listening on" not in (tmp_path / "serve.log").read_bytes():
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve.sh did not start"
            time.sleep(0.1)
        outputs = run_lines(walkthrough, env)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            rc = serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            raise
        log.close()
    assert rc == 0, (tmp_path / "serve.log").read_text()[-3000:]

    activate, send_udp, send_tcp, listed, stats, phone, empty = outputs
    assert activate == ""
    assert send_udp == send_tcp == "202 Accepted\n"
    rows = listed.splitlines()
    assert rows[0].split()[:3] == ["id", "for", "from"] and len(rows) == 3
    assert rows[1].endswith("Hi Bob") and rows[2].endswith("Call me")
    # (the column width follows the longest counter name)
    assert ["msilo:stored_messages", "2"] in [line.split() for line in stats.splitlines()]
    lines = phone.splitlines()
    assert lines[0].startswith("registered sip:bob@127.0.0.1 at sip:bob@127.0.0.1:")
    assert re.fullmatch(r"message from sip:alice@127\.0\.0\.1: \[Offline message - .+\] Hi Bob",
                        lines[1]), lines
    assert re.fullmatch(r"message from sip:alice@127\.0\.0\.1: \[Offline message - .+\] Call me",
                        lines[2]), lines
    assert lines[3:] == ["unregistered sip:bob@127.0.0.1 (2 messages received)"]
    assert empty == "no messages waiting\n"


def run_lines(lines: list[str], env: dict[str, str]) -> list[str]:
    """Run the lines in one shell, as pasted; the output of each, in order."""
    script = ["set -e"]
    for i, line in enumerate(lines):
        script += [f"echo '@@@ {i}'", line]
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    parts = re.split(r"^@@@ \d+\n", result.stdout, flags=re.M)
    assert parts[0] == "" and len(parts) == len(lines) + 1, result.stdout
    return parts[1:]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_running_in_a_checkout_leaves_nothing_untracked(tmp_path: Path) -> None:
    """A server run in the checkout (data dir: the working directory), then a
    message stored, delivered and counted: git sees no new file."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSILO_")}
    port = free_port()
    env["SIPSILO_SERVER__LISTEN"] = f'["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]'
    sipsilo = [sys.executable, "-m", "sipsilo"]
    log = open(tmp_path.parent / f"{tmp_path.name}.log", "w+b")  # noqa: SIM115
    serve = subprocess.Popen([*sipsilo, "serve"], cwd=tmp_path, env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"listening on" not in Path(log.name).read_bytes():
            assert serve.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.05)
        for args in (["send", "--from", "alice@127.0.0.1", "--to", "bob@127.0.0.1", "hi"],
                     ["register", "bob@127.0.0.1", "--for", "1"], ["stats"], ["silo", "list"]):
            done = subprocess.run([*sipsilo, *args], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                                cwd=tmp_path, capture_output=True, text=True, check=True)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        log.close()
    assert status.stdout == "?? .gitignore\n"
    assert (tmp_path / "auth.secret").exists() and (tmp_path / "sipsilo.db").exists()

"""A real web client: JsSIP 3 in headless Chromium, over WSS, against a real server.

The page is what a web app does with JsSIP (tests/web, pinned by its lock
file, bundled with esbuild into one script): it registers bob over WSS with
an outbound-style Contact on a `.invalid` host, shows the MESSAGEs it gets,
and can send one. Around it: a UDP user (alice) on a plain socket, and
messages stored for bob before the page opens and after its tab is closed.

Needs Debian's `chromium`, Playwright for Python (its own browser download is
not used: the system Chromium is launched) and `npm ci` in tests/web; the
test command installs all three.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ServerProcess, free_port
from tests.integration.secure_clients import UdpPhone, make_certs, udp_message
from tests.integration.silo_helpers import stats, wait_for

pytestmark = pytest.mark.integration

WEB = Path(__file__).resolve().parent.parent / "web"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ESBUILD = WEB / "node_modules" / ".bin" / "esbuild"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>sipsilo web client</title>
<script src="jssip.js"></script></head>
<body><ul id="inbox"></ul>
<script>
  window.received = [];
  window.state = "new";
  const socket = new JsSIP.WebSocketInterface("__WSS__");
  const ua = new JsSIP.UA({
    sockets: [socket], uri: "sip:bob@127.0.0.1", register: true, register_expires: 300,
  });
  ua.on("registered", () => { window.state = "registered"; });
  ua.on("registrationFailed", (e) => { window.state = "failed: " + e.cause; });
  ua.on("newMessage", (e) => {
    if (e.originator !== "remote") return;
    const text = e.request.body;
    window.received.push(text);
    const li = document.createElement("li");
    li.textContent = text;
    document.getElementById("inbox").appendChild(li);
  });
  window.sendTo = (target, body) => new Promise((resolve) => {
    ua.sendMessage(target, body, { eventHandlers: {
      succeeded: (e) => resolve("ok " + e.response.status_code),
      failed: (e) => resolve("failed " + e.cause),
    }});
  });
  ua.start();
</script></body></html>
"""


def _bundle(into: Path) -> None:
    subprocess.run([str(ESBUILD), str(WEB / "entry.js"), "--bundle", "--format=iife",
                    f"--outfile={into}", "--log-level=warning"], check=True, timeout=60)


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed")
    if not ESBUILD.exists():
        pytest.skip("tests/web node packages not installed (npm ci in tests/web)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=["--no-sandbox", "--ignore-certificate-errors"])
        try:
            yield chromium
        finally:
            chromium.close()


def test_jssip_in_chromium_gets_stored_messages_in_order_and_after_the_tab_closed(
        browser: Any, make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "web"
    make_certs(data_dir)
    udp = free_port()
    wss = free_port({udp})
    server = make_server(data_dir=data_dir, port=udp, **{
        "server.listen": [f"udp:127.0.0.1:{udp}", f"wss:127.0.0.1:{wss}"],
        "tls.certificate": "cert.pem", "tls.private_key": "key.pem",
    })
    site = tmp_path / "site"
    site.mkdir()
    _bundle(site / "jssip.js")
    (site / "index.html").write_text(PAGE.replace("__WSS__", f"wss://127.0.0.1:{wss}"))
    url = (site / "index.html").as_uri()

    for body in ("first", "second", "third"):
        assert udp_message(udp, "bob", body) == "SIP/2.0 202 Accepted"
    alice = UdpPhone(udp)
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("window.state !== 'new'", timeout=15000)
        assert page.evaluate("window.state") == "registered"
        page.wait_for_function("window.received.length >= 3", timeout=15000)
        received = page.evaluate("window.received")
        assert [text.rsplit("] ", 1)[-1] for text in received] == ["first", "second", "third"]
        assert page.locator("#inbox li").count() == 3
        wait_for(lambda: not server.rows())

        assert page.evaluate("sendTo('sip:alice@127.0.0.1', 'hello from the browser')") == "ok 200"
        wait_for(lambda: alice.bodies == ["hello from the browser"])

        page.close()  # the tab is closed: bob's binding stays, its WebSocket is gone
        assert udp_message(udp, "bob", "while the tab was closed", timeout=20) == (
            "SIP/2.0 202 Accepted")
        assert [r["body"] for r in server.rows()] == [b"while the tab was closed"]

        page = context.new_page()
        page.goto(url)
        page.wait_for_function("window.received.length >= 1", timeout=20000)
        assert [t.rsplit("] ", 1)[-1] for t in page.evaluate("window.received")] == [
            "while the tab was closed"]
        wait_for(lambda: not server.rows())
        assert stats(server)["msilo:dumped_messages"] == 4
    finally:
        context.close()
        alice.close()
    log = server.log()
    assert "Traceback" not in log
    assert "transport=ws" in log and "(from wss:" in log

"""The server answers a real SIP client (SIPp) over UDP and TCP."""

from __future__ import annotations

import pytest

from tests.integration.harness import ServerProcess, run_sipp


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_to_server_gets_200(server: ServerProcess, transport: str) -> None:
    result = run_sipp("uac_options", server, transport=transport,
                      keys={"ruser_at": "", "max_forwards": 70}, subst={"expect": 200})
    assert result.returncode == 0, result.stdout
    reply = result.received()[0]
    assert reply.startswith("SIP/2.0 200 OK")
    assert "Allow: " in reply and "MESSAGE" in reply

"""REGISTER once with pjsua2 (PJSIP's own API) and print the final status.

``python pjsua_register.py AOR USER PASSWORD SIP_PORT``: prints ``registered <code>`` and
exits 0 on a 2xx, 1 otherwise (10 s at most). A script of its own, run as a separate
process: PJSIP's threads and signal handling stay out of the test runner.
"""

from __future__ import annotations

import sys
import time

import pjsua2 as pj


class Account(pj.Account):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.code = 0

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # PJSIP calls it by this name
        self.code = prm.code


def main(aor: str, user: str, password: str, port: int) -> int:
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.port = port
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    acfg = pj.AccountConfig()
    acfg.idUri = aor
    acfg.regConfig.registrarUri = "sip:" + aor.split("@", 1)[1]
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    acc = Account()
    acc.create(acfg)
    deadline = time.monotonic() + 10
    while acc.code == 0 and time.monotonic() < deadline:
        ep.libHandleEvents(50)
    code = acc.code
    print(f"registered {code}", flush=True)
    acc.shutdown()
    ep.libDestroy()
    return 0 if 200 <= code < 300 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))

#!/usr/bin/env bash
# What the TLS/WebSocket browser test needs beyond Python: Debian's chromium (Playwright's
# own browser download is never used) and the pinned JsSIP + esbuild from tests/web's lock
# file. Called by scripts/test.sh; safe to run again (installs only what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing Debian packages for the browser test: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || echo "apt-get update failed; trying the install anyway"
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "missing Debian packages (${need[*]}): run as root or install them" >&2
    fi
fi
if command -v npm >/dev/null 2>&1; then
    (cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
fi

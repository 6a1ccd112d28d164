#!/usr/bin/env bash
# Install what the tests need (Debian: SIPp, sipsak, baresip, sipvicious, chromium, npm;
# node: JsSIP from tests/web's lock file; Python: the package with its test extras, in the
# project venv .venv) and run every check: ruff, mypy, pytest. Arguments go to pytest
# (e.g. ./scripts/test.sh tests/test_cli.py).
# This is the test command of the README's quick start; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v sipsak >/dev/null 2>&1 || need+=(sipsak)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v svwar >/dev/null 2>&1 || need+=(sipvicious)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the JsSIP browser test
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing Debian packages: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || echo "apt-get update failed; trying the install anyway"
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "missing Debian packages (${need[*]}): run as root or install them" >&2
    fi
fi

# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv test
# The tests start servers with sys.executable: the venv's, which runs this checkout.
export PATH="$(dirname "$VENV_PY"):$PATH"

# TLS/WebSocket browser test: the pinned JsSIP and esbuild (tests/web/package-lock.json)
if command -v npm >/dev/null 2>&1; then
    (cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== ruff"
"$VENV_PY" -m ruff check src tests examples
echo "== mypy --strict (sip, transaction), mypy (the whole package)"
"$VENV_PY" -m mypy --strict src/sipsilo/sip src/sipsilo/transaction
"$VENV_PY" -m mypy src/sipsilo
echo "== pytest"
"$VENV_PY" -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Install sipsilo into the project venv .venv (once; again when pyproject.toml
# changes) and run "sipsilo serve" with the arguments given, e.g.
#   ./scripts/serve.sh --set 'server.listen=["udp:127.0.0.1:5070"]'
# The README's quick start; works with Debian's own python3 (PEP 668) as with pyenv.
# With a C compiler it runs the compiled SIP core (see ensure_core in venv.sh;
# SIPSILO_MYPYC=0 for the pure-Python one).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv
ensure_core  # the compiled SIP core when a C compiler is there, else the pure-Python one
if [ -n "$CORE_PATH" ]; then
    export PYTHONPATH="$CORE_PATH${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$(dirname "$VENV_PY")/sipsilo" serve "$@"

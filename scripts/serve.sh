#!/usr/bin/env bash
# Install sipsilo into the project venv .venv (once; again when pyproject.toml
# changes) and run "sipsilo serve" with the arguments given, e.g.
#   ./scripts/serve.sh --set 'server.listen=["udp:127.0.0.1:5070"]'
# The README's quick start; works with Debian's own python3 (PEP 668) as with pyenv.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv
exec "$(dirname "$VENV_PY")/sipsilo" serve "$@"

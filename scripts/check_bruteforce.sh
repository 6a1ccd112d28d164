#!/usr/bin/env bash
# Manual check that password guessing is slowed down: start a server with one user,
# run sipvicious' svcrack against it with a short wordlist (the right password last),
# and show that the source gets blocked before the right password is reached.
# Not part of scripts/test.sh: svcrack keeps resending after a 403 and only stops at
# its own timeout, so it takes about a minute (tests/integration/test_auth.py shows
# the blocking with a raw socket in under a second).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v svcrack >/dev/null || { echo "svcrack missing: apt-get install sipvicious" >&2; exit 2; }
dir=$(mktemp -d)
port=${PORT:-25999}
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
printf '[server]\nlisten = ["udp:127.0.0.1:%s"]\ndomains = ["localhost"]\n[auth]\nmax_failures = 5\nblock_time = 60\n' "$port" > "$dir/c.toml"
echo secret | python3 -m sipsilo user add bob@localhost --password-stdin -c "$dir/c.toml" --data-dir "$dir"
python3 -m sipsilo serve -c "$dir/c.toml" --data-dir "$dir" > "$dir/server.log" 2>&1 &
pid=$!
sleep 1.5
printf '%s\n' a b c d e f g h secret > "$dir/words"
timeout 60 svcrack -u bob -d "$dir/words" -p "$port" --domain=localhost 127.0.0.1 > "$dir/svcrack.out" 2>&1 || true
cat "$dir/svcrack.out"
grep "auth failure" "$dir/server.log" || true
if grep -q "source blocked" "$dir/server.log" && ! grep -qi "secret" "$dir/svcrack.out"; then
    echo "OK: svcrack was blocked after $(grep -c 'auth failure' "$dir/server.log") failures"
else
    echo "FAIL: svcrack was not blocked" >&2
    exit 1
fi

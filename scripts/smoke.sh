#!/usr/bin/env bash
# The quick start, as a newcomer on stock Debian/Ubuntu runs it: Debian's own
# /usr/bin/python3 (PEP 668, no pip into it) first on PATH, a fresh venv, the README's
# install-and-run command. Passes when the server answers OPTIONS over UDP and
# stops cleanly on SIGTERM. Bounded: 10 min for the install, 60 s to start, 30 s to stop.
# .ci/run runs it before the test suite; nothing is left behind (temporary dir).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x /usr/bin/python3 ]; then
    export PATH="/usr/bin:$PATH"
else
    echo "smoke: no /usr/bin/python3; using $(command -v python3)" >&2
fi
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "smoke: $(command -v python3) ($(python3 -c 'import platform; print(platform.python_version())')), venv $tmp/venv, udp:127.0.0.1:$port"

# The README's command, with the venv, data dir and port moved out of the way.
SIPSILO_VENV="$tmp/venv" SIPSILO_DATA_DIR="$tmp/data" \
SIPSILO_SERVER__LISTEN="udp:127.0.0.1:$port" \
    timeout 900 ./scripts/serve.sh >"$tmp/serve.log" 2>&1 &
pid=$!

deadline=$((SECONDS + 660))
until grep -q "listening on" "$tmp/serve.log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "smoke: FAIL: the server did not start" >&2
        cat "$tmp/serve.log" >&2
        exit 1
    fi
    sleep 0.5
done

# Which SIP core the quick start built and runs (compiled, or why not).
grep -E "^sipsilo: |compiling the SIP core|listening on" "$tmp/serve.log" | sed 's/^/smoke: /'

python3 - "$port" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
request = (
    f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK-smoke-1\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:smoke@127.0.0.1>;tag=smoke\r\n"
    f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: smoke-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n").encode()
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(1.0)
    for _ in range(10):
        s.sendto(request, ("127.0.0.1", port))
        try:
            answer = s.recv(65535).decode(errors="replace")
        except TimeoutError:
            continue
        if answer.startswith("SIP/2.0 200"):
            print("smoke: OPTIONS answered:", answer.split("\r\n", 1)[0])
            sys.exit(0)
    sys.exit("smoke: FAIL: no 200 to OPTIONS")
PY

kill -TERM "$pid"
for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$pid" 2>/dev/null; then
    echo "smoke: FAIL: the server did not stop on SIGTERM" >&2
    exit 1
fi
status=0
wait "$pid" || status=$?
pid=
if [ "$status" != 0 ]; then
    echo "smoke: FAIL: the server exited with status $status" >&2
    cat "$tmp/serve.log" >&2
    exit 1
fi
echo "smoke: OK"

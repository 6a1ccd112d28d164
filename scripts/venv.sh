# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/serve.sh: make sure the project's own
# virtual environment .venv exists and has this checkout installed, then leave
# its interpreter in $VENV_PY.
#
# A venv, not the system interpreter: Debian's /usr/bin/python3 refuses
# "pip install" (PEP 668, externally managed), and a pyenv one should not get
# this checkout's packages mixed into it. The venv is made once, re-used, and
# re-installed when pyproject.toml (or the extras asked for) changes.
# Usage: ensure_venv [EXTRAS]   e.g. ensure_venv test
# SIPSILO_VENV names another directory for the venv (the CI smoke step uses a fresh one).

ensure_venv() {
    local extras=${1:-} py=${PYTHON:-python3} venv=${SIPSILO_VENV:-.venv} stamp want have spec
    if ! command -v "$py" >/dev/null 2>&1; then
        echo "sipsilo needs Python >= 3.11: '$py' not found (apt-get install python3)" >&2
        return 1
    fi
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "sipsilo needs Python >= 3.11; $py is $("$py" -c 'import platform; print(platform.python_version())')" \
             "(set PYTHON=/path/to/python3.11 or newer)" >&2
        return 1
    fi
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$venv"
        echo "creating the virtual environment $venv (with $py)"
        if ! "$py" -m venv "$venv" 2>/dev/null; then
            rm -rf "$venv"
            # Debian/Ubuntu ship venv's pip bootstrap (ensurepip) as a package of its own.
            local pkg
            pkg="python$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                echo "installing the Debian package $pkg (python3 -m venv needs it)"
                export DEBIAN_FRONTEND=noninteractive
                apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
                    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null; }
            else
                echo "python3 -m venv failed; on Debian/Ubuntu it needs the package $pkg:" \
                     "run this as root, or 'sudo apt-get install $pkg' first" >&2
                return 1
            fi
            "$py" -m venv "$venv"
        fi
    fi
    spec=.
    [ -n "$extras" ] && spec=".[$extras]"
    # What was installed: this pyproject.toml, with which extras. A venv with the
    # test extras serves "sipsilo serve" as well; the other way round it is updated.
    want="$(cksum < pyproject.toml) $("$venv/bin/python" -c 'import sys; print(sys.version)')"
    stamp="$venv/.sipsilo-installed"
    have=$(cat "$stamp" 2>/dev/null || true)
    if [ "${have%%|*}" != "$want" ] || { [ -n "$extras" ] && [ "${have#*|}" != "$extras" ]; }; then
        echo "installing sipsilo and its dependencies into $venv"
        rm -f "$stamp"
        # Editable: the venv runs this checkout's sources, so an edit needs no reinstall.
        # (pip's notes about package index locations it skips are left out; its exit
        # status is what counts, and a failure stops here.)
        local status=0
        set -o pipefail
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" 2>&1 \
            | { grep -v '^WARNING: Location .* is ignored' || true; } || status=$?
        if [ "$status" != 0 ]; then
            echo "installing sipsilo into $venv failed (pip exit status $status, see above)" >&2
            return 1
        fi
        printf '%s|%s' "$want" "$extras" > "$stamp"
    fi
    VENV_PY=$(cd "$venv" && pwd)/bin/python
}

# Used by scripts/serve.sh after ensure_venv: the compiled SIP core (setup.py,
# SIPSILO_MYPYC=1: mypyc, about a minute) as a non-editable copy of this checkout in
# $venv/sipsilo-core, rebuilt when src/, setup.py or pyproject.toml change. Leaves the
# directory to put first on PYTHONPATH in $CORE_PATH, or nothing for the pure-Python
# core of the editable install: with SIPSILO_MYPYC=0, without a C compiler, or when
# the build fails (one line says so; a failed build is not retried until a source
# changes). The tests (scripts/test.sh) keep running the pure-Python sources.
ensure_core() {
    local venv=${SIPSILO_VENV:-.venv} dir want log failed
    CORE_PATH=
    case "${SIPSILO_MYPYC:-1}" in
        0 | no | false) echo "sipsilo: SIPSILO_MYPYC=$SIPSILO_MYPYC: pure-Python core"; return 0 ;;
    esac
    if ! command -v "${CC:-cc}" >/dev/null 2>&1; then
        echo "sipsilo: no C compiler (${CC:-cc}): pure-Python core"
        return 0
    fi
    venv=$(cd "$venv" && pwd)
    dir=$venv/sipsilo-core log=$venv/sipsilo-core.log failed=$venv/sipsilo-core.failed
    want="$( { cat setup.py pyproject.toml; find src -name '*.py' | LC_ALL=C sort | xargs cat; } | cksum) $("$VENV_PY" -c 'import sys; print(sys.version)')"
    if [ "$(cat "$dir/.sipsilo-core" 2>/dev/null)" = "$want" ]; then
        CORE_PATH=$dir
        return 0
    fi
    if [ "$(cat "$failed" 2>/dev/null)" = "$want" ]; then
        echo "sipsilo: compiling the core failed before (see $log): pure-Python core"
        return 0
    fi
    echo "compiling the SIP core with mypyc into $dir (about a minute; SIPSILO_MYPYC=0 skips it)"
    rm -rf "$dir" "$failed"
    # The build fetches mypy into pip's isolated build environment; whatever fails
    # (network, compiler, headers), the installed copy must import compiled.
    if SIPSILO_MYPYC=1 "$VENV_PY" -m pip install -v --disable-pip-version-check --no-deps \
            --target "$dir" . >"$log" 2>&1 \
       && PYTHONPATH=$dir "$VENV_PY" -c 'import sys, sipsilo.sip as s; sys.exit(not s.compiled())' \
            >>"$log" 2>&1; then
        printf '%s' "$want" > "$dir/.sipsilo-core"
        CORE_PATH=$dir
    else
        rm -rf "$dir"
        printf '%s' "$want" > "$failed"
        echo "sipsilo: compiling the core failed (see $log): pure-Python core"
    fi
}

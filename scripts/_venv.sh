# shellcheck shell=bash
# Sourced by scripts/test and scripts/quickstart: make .venv and install mailmoat into it.
# Reinstalls only when pyproject.toml changed (the install is editable, so code changes
# need no reinstall). Expects to run from the repository root.

# The interpreter to build .venv from: $MAILMOAT_PYTHON if set, else Debian's own /usr/bin/python3
# (what a Debian user runs, even when pyenv or the like puts another python3 first on PATH), else
# the python3 on PATH.
mailmoat_python() {
    if [ -n "${MAILMOAT_PYTHON:-}" ]; then
        printf '%s\n' "$MAILMOAT_PYTHON"
    elif [ -x /usr/bin/python3 ]; then
        printf '%s\n' /usr/bin/python3
    else
        command -v python3 || echo python3
    fi
}

# "<version> <real path>" of a Python interpreter (empty if it does not run).
mailmoat_python_id() {
    "$1" -c 'import os, sys; print(sys.version.split()[0], os.path.realpath(sys.executable))' \
        2>/dev/null || true
}

mailmoat_venv() {
    local venv=.venv stamp=.venv/.mailmoat-install
    local python wanted want
    python="$(mailmoat_python)"
    # Version and real path: another python of the same version (pyenv's 3.11.7 against
    # Debian's 3.11.2, or the reverse) also means a new .venv.
    wanted="$(mailmoat_python_id "$python")"
    if [ -z "$wanted" ]; then
        echo "!! cannot run $python (set MAILMOAT_PYTHON to a Python 3.11+ interpreter)" >&2
        return 1
    fi
    want="$wanted $(sha256sum pyproject.toml | cut -d' ' -f1)"

    # Recreate when missing, broken, or made by another interpreter than the one chosen now.
    if [ "$(mailmoat_python_id "$venv/bin/python")" != "$wanted" ]; then
        echo "==> making $venv with $python ($("$python" --version 2>&1))"
        rm -rf "$venv"
        if ! "$python" -m venv "$venv" 2>/dev/null; then
            # Debian's python3 ships venv/ensurepip separately.
            rm -rf "$venv"
            mailmoat_apt_install python3-venv
            "$python" -m venv "$venv"
        fi
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "==> installing mailmoat and its test dependencies into $venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,fast]'
        # pip installs some sdists (pyspf, dkimpy) with setup.py, which writes no byte-code
        # when PYTHONDONTWRITEBYTECODE is set: each gateway process would compile them again
        "$venv/bin/python" -m compileall -qq -j0 "$venv/lib" || true
        printf '%s\n' "$want" >"$stamp"
    fi
}

# Install Debian packages (root or passwordless sudo); never starts a service.
mailmoat_apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo)
        else
            echo "!! need root (or sudo) to install: $*; peer tests will be skipped" >&2
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        echo "!! no apt-get: install $* yourself; peer tests will be skipped" >&2
        return 0
    fi
    echo "==> installing Debian packages: $*"
    # Keep package scripts from starting services (the system postfix in particular).
    local policy=/usr/sbin/policy-rc.d added_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    local rc=0
    if ! "${apt[@]}" install --no-install-recommends "$@"; then
        # Probably stale or missing package lists (fresh image): refresh once and retry.
        "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "$@" || rc=$?
    fi
    if [ -n "$added_policy" ]; then
        "${sudo[@]}" rm -f "$policy"
    fi
    return "$rc"
}

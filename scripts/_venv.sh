# shellcheck shell=bash
# Sourced by scripts/test and scripts/quickstart: make .venv and install mailmoat into it.
# Reinstalls only when pyproject.toml changed (the install is editable, so code changes
# need no reinstall). Expects to run from the repository root.

mailmoat_venv() {
    local venv=.venv stamp=.venv/.mailmoat-install
    local want
    want="$(python3 --version 2>&1) $(sha256sum pyproject.toml | cut -d' ' -f1)"

    # Recreate when missing, broken, or made by another python3 than the one on PATH now.
    if [ "$("$venv/bin/python" --version 2>&1)" != "$(python3 --version 2>&1)" ]; then
        rm -rf "$venv"
        if ! python3 -m venv "$venv" 2>/dev/null; then
            # Debian's python3 ships venv/ensurepip separately.
            rm -rf "$venv"
            mailmoat_apt_install python3-venv
            python3 -m venv "$venv"
        fi
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "==> installing mailmoat and its test dependencies into $venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,fast]'
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

#!/usr/bin/env bash
# Prepare this machine for Caisson: the Debian packages the engine and its
# template builders call, and a Python >= 3.12 virtualenv in .venv with the
# pinned requirements. Idempotent, and quick when everything is there
# already (no apt-get update, no pip run unless something is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(busybox-static debootstrap zstd xz-utils uidmap iproute2 procps psmisc dnsmasq-base dnsmasq-utils nftables
              lxcfs  # containers' /proc/meminfo, cpuinfo, uptime... showing their own limits
              crun  # a runtime the nesting tests run inside a container
              skopeo umoci docker-registry  # OCI images: pull (skopeo), the bench's peer (umoci), tests' loopback registry
              btrfs-progs e2fsprogs  # storage backends: btrfs subvolumes, ext4 images
              openssl redis-server postgresql chromium)  # the last three: services and the browser tests
VENV=.venv
REQUIREMENTS=requirements.txt
STAMP=$VENV/.requirements.sha256

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# --- Debian packages ----------------------------------------------------------
if command -v dpkg-query >/dev/null; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        [[ $(id -u) -eq 0 ]] || die "these Debian packages are missing and installing them needs root: ${missing[*]}"
        say "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
    else
        say "Debian packages present"
    fi
else
    say "warning: not a Debian system; install by hand: ${APT_PACKAGES[*]}"
fi

# --- Python >= 3.12 -------------------------------------------------------------
new_enough() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    local candidate
    for candidate in python3.13 python3.12; do
        if command -v "$candidate" >/dev/null && new_enough "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    if command -v pyenv >/dev/null; then
        # Newest first; 3.1[2-9] keeps 3.1 and 3.10/3.11 out.
        while read -r candidate; do
            if [[ -x $candidate ]] && new_enough "$candidate"; then
                echo "$candidate"
                return 0
            fi
        done < <(ls -d "$(pyenv root)"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV)
    fi
    if [[ -x /usr/bin/python3 ]] && new_enough /usr/bin/python3; then
        echo /usr/bin/python3
        return 0
    fi
    return 1
}

if ! new_enough "$VENV/bin/python"; then
    if [[ -e $VENV ]]; then say "recreating $VENV: its Python is missing or older than 3.12"; fi
    python=$(find_python) || die "no Python >= 3.12 found (looked for python3.13, python3.12, pyenv versions, /usr/bin/python3); install one, e.g. 'pyenv install 3.12'"
    python=$("$python" -c 'import sys; print(sys.executable)')
    say "creating $VENV with $python"
    # --clear empties it in place, which also works when .venv is a mount point.
    "$python" -m venv --clear "$VENV"
fi

# --- requirements ---------------------------------------------------------------
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
wanted=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$wanted" ]]; then
    say "installing $REQUIREMENTS into $VENV"
    "$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS"
    echo "$wanted" >"$STAMP"
fi
"$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check >&2; die "pip check failed"; }
# Cached bytecode for the project itself: the CLI starts tens of milliseconds faster, even where
# PYTHONDONTWRITEBYTECODE keeps Python from writing it on its own.
"$VENV/bin/python" -m compileall -q engine webui tasks bench >/dev/null
say "ready: $("$VENV/bin/python" --version) in $VENV"

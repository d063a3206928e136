#!/usr/bin/env bash
# Installs what clap-mlx and the sound monitor need on Debian/Ubuntu.
#   bash scripts/setup.sh          runtime (OpenBLAS, PortAudio, Pulse ALSA plugin, the package)
#   bash scripts/setup.sh --test   plus the test tools (Mosquitto, PulseAudio, sox, espeak-ng, torch/transformers)
# The package goes into the active virtual environment ($VIRTUAL_ENV), else into .venv here,
# made from $PYTHON (default: python3). A distribution's own Python refuses pip installs
# outside a virtual environment (PEP 668: Debian 12, Ubuntu 23.04+). Afterwards run
# .venv/bin/sound-monitor, .venv/bin/clap-mlx, or `. .venv/bin/activate` first.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "setup.sh: error: $*" >&2; exit 1; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed; }

runtime_apt=(libopenblas0-pthread libportaudio2 libasound2-plugins libsndfile1 gcc ffmpeg)
test_apt=(mosquitto mosquitto-clients pulseaudio pulseaudio-utils sox libsox-fmt-all espeak-ng openssl chromium gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)

case "${1:-}" in
    "") extras="hub"; apt_packages=("${runtime_apt[@]}") ;;
    --test) extras="hub,test"; apt_packages=("${runtime_apt[@]}" "${test_apt[@]}") ;;
    *) die "unknown option '$1' (usage: bash scripts/setup.sh [--test])" ;;
esac

if [ -n "${VIRTUAL_ENV:-}" ]; then
    venv=$VIRTUAL_ENV
    base=$venv/bin/python
else
    venv=$PWD/.venv
    base=${PYTHON:-python3}
fi
command -v "$base" >/dev/null || die "no Python interpreter '$base' (apt install python3, or set PYTHON=/path/to/python3)"

# gcc + Python.h build clap_mlx's C kernels (without them the install still works, on the
# 1.2-5.6x slower NumPy path); Debian's own python3 needs python3-dev for the header.
if ! "$base" -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    apt_packages+=(python3-dev)
fi
# Debian's python3 makes virtual environments only with python3-venv (it ships ensurepip).
if [ ! -x "$venv/bin/python" ] && ! "$base" -c 'import ensurepip' 2>/dev/null; then
    apt_packages+=(python3-venv)
fi

if command -v apt-get >/dev/null; then
    missing=()
    for package in "${apt_packages[@]}"; do
        installed "$package" || missing+=("$package")
    done
    # Only what is missing: on a prepared machine a normal user needs no sudo.
    if [ ${#missing[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        sudo_if_needed apt-get update -qq
        sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup.sh: creating the virtual environment $venv with $("$base" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    "$base" -m venv "$venv" || die "could not create $venv with $base (Debian/Ubuntu: apt install python3-venv)"
fi
python=$venv/bin/python
"$python" -c '' 2>/dev/null || die "$venv is broken (made by a Python that is gone?): remove it and run again"

# The test extra pins torch==2.13.0 (CPU build): never let pip resolve a CUDA torch.
"$python" -m pip install -q -e ".[${extras}]" || die "pip could not install clap-mlx into $venv (its error is above)"
(cd / && "$python" -c 'import clap_mlx, monitor') || die "clap-mlx was installed into $venv but does not import"
if [ -n "${VIRTUAL_ENV:-}" ]; then
    echo "setup.sh: installed into the active virtual environment $venv"
else
    echo "setup.sh: installed into $venv; run $venv/bin/sound-monitor and $venv/bin/clap-mlx, or '. $venv/bin/activate' first"
fi

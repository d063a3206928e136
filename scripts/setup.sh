#!/usr/bin/env bash
# Installs what clap-mlx and the sound monitor need on Debian/Ubuntu.
#   bash scripts/setup.sh          runtime (OpenBLAS, PortAudio, Pulse ALSA plugin, the package)
#   bash scripts/setup.sh --test   plus the test tools (Mosquitto, PulseAudio, sox, espeak-ng, torch/transformers)
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

runtime_apt=(libopenblas0-pthread libportaudio2 libasound2-plugins libsndfile1 gcc)
test_apt=(mosquitto mosquitto-clients pulseaudio pulseaudio-utils sox libsox-fmt-all espeak-ng openssl chromium)

extras="hub"
apt_packages=("${runtime_apt[@]}")
# gcc + Python.h build clap_mlx's C kernels (without them the install still works, on the
# 1.2-5.6x slower NumPy path); Debian's own python3 needs python3-dev for the header.
if ! python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    apt_packages+=(python3-dev)
fi
if [ "${1:-}" = "--test" ]; then
    extras="hub,test"
    apt_packages+=("${test_apt[@]}")
fi

if command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    sudo_if_needed apt-get update -qq
    sudo_if_needed apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi
# The test extra pins torch==2.13.0 (CPU build): never let pip resolve a CUDA torch.
python3 -m pip install -q -e ".[${extras}]"

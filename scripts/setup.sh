#!/usr/bin/env bash
# Installs the system packages the project needs (Debian 12), only those that are missing.
# Idempotent: a second run installs nothing. Needs root (or sudo) when something is missing.
set -euo pipefail

packages=(
  cmake g++ ninja-build pkg-config
  clang-format  # scripts/check_format.sh (ctest test `format`)
  libtorch-dev  # CPU libtorch 1.13; libopenblas0 below replaces the reference BLAS it would use (about 3x faster backward)
  libboost1.81-dev libboost-json1.81-dev libboost-program-options1.81-dev libboost-filesystem1.81-dev
  libopenblas0
  libhdf5-dev libturbojpeg0-dev libpng-dev
  libgloo-dev  # headers of c10d's ProcessGroupGloo.hpp (multi-process data parallel, docs/distributed.md)
  libgtest-dev libbenchmark-dev
  python3-h5py python3-matplotlib
  python3-numpy  # rewards/reward_server/example_server.py and its tests (/usr/bin/python3)
  python3-torch  # benchmarks/python_reference: the Python peer's checks (ctest python_peer_math, python_peer_toy_unet)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

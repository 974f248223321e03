#!/usr/bin/env bash
# Downloads (never installs) the Debian 12 packages that benchmarks/gpu_check.sh needs on a GPU
# machine that has a CUDA PyTorch but not the project's system libraries: the -dev packages of
# scripts/setup.sh (Boost 1.81, HDF5, libpng, libturbojpeg, Gloo headers, GoogleTest, Google
# Benchmark) and the runtime libraries they link to. Runs on a Debian 12 machine with network
# access to Debian's archive (apt-get download needs no root); carry the folder to the GPU machine
# and point gpu_check.sh at it: SDPO_DEBS=/path/to/folder (or unpack it yourself with
# `dpkg -x` and give SDPO_DEPS_PREFIX).
#
# usage: benchmarks/fetch_gpu_deps.sh [OUT_DIR]     (default /tmp/gpu_debs)
#
# Not fetched (present on any machine that runs a CUDA PyTorch, or not needed): libc, libstdc++,
# zlib, libcurl, libssl, libtorch (PyTorch's own), libopenblas, CUDA. The .deb files are for
# amd64 and built against glibc 2.36 (Debian 12); gpu_check.sh warns on an older glibc.
set -euo pipefail

out="${1:-/tmp/gpu_debs}"
max_mib="${SDPO_DEBS_MAX_MIB:-60}"

packages=(
  # Boost 1.81: headers + CMake configs (BoostConfig.cmake) and the compiled components the
  # project links (json, program_options, filesystem) with what their CMake configs require.
  libboost1.81-dev
  libboost-json1.81-dev libboost-json1.81.0
  libboost-program-options1.81-dev libboost-program-options1.81.0
  libboost-filesystem1.81-dev libboost-filesystem1.81.0
  libboost-system1.81-dev libboost-system1.81.0
  libboost-container1.81-dev libboost-container1.81.0
  libboost-atomic1.81-dev libboost-atomic1.81.0
  # HDF5 (run.h5): headers and libraries in Debian's hdf5/serial layout, and libhdf5's own
  # dependencies that a non-Debian machine may lack (szip through libaec).
  libhdf5-dev libhdf5-103-1 libhdf5-hl-100 libhdf5-cpp-103-1 libhdf5-hl-cpp-100 libsz2 libaec0 libaec-dev
  # Images: PNG grids, the JPEG compressibility reward.
  libpng-dev libpng16-16 libturbojpeg0-dev libturbojpeg0
  # c10d's ProcessGroupGloo.hpp includes the Gloo headers (framework/CMakeLists.txt).
  libgloo-dev libgloo0
  # Tests and benchmarks.
  libgtest-dev libbenchmark-dev libbenchmark1debian
)

if ! command -v apt-get > /dev/null; then
  echo "fetch_gpu_deps: apt-get not found: run this on Debian 12 (bookworm)" >&2
  exit 1
fi
if [ -r /etc/os-release ] && ! grep -q 'VERSION_CODENAME=bookworm' /etc/os-release; then
  echo "fetch_gpu_deps: warning: not Debian 12 (bookworm); the versions fetched are this system's" >&2
fi

mkdir -p "$out"
cd "$out"
echo "fetch_gpu_deps: downloading ${#packages[@]} packages into $out"
# apt-get download fetches exactly the named packages (no dependencies): the list above is the
# closure that matters. A package missing from the archive fails the whole command.
if ! apt-get download -q "${packages[@]}" > "$out/download.log" 2>&1; then
  echo "fetch_gpu_deps: apt-get download FAILED (an 'apt-get update' may be needed):" >&2
  tail -20 "$out/download.log" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  compgen -G "${p}_*.deb" > /dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fetch_gpu_deps: not downloaded: ${missing[*]}" >&2
  exit 1
fi

echo "fetch_gpu_deps: fetched:"
ls -l -- *.deb | awk '{printf "  %8.1f KiB  %s\n", $5 / 1024, $9}'
total_kib=$(du -k -c -- *.deb | tail -1 | cut -f1)
echo "fetch_gpu_deps: $(ls -- *.deb | wc -l) files, $((total_kib / 1024)) MiB in all"
if [ "$total_kib" -gt $((max_mib * 1024)) ]; then
  echo "fetch_gpu_deps: more than $max_mib MiB (SDPO_DEBS_MAX_MIB)" >&2
  exit 1
fi
echo "fetch_gpu_deps: carry $out to the GPU machine and run SDPO_DEBS=<that folder> benchmarks/gpu_check.sh"

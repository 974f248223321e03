#!/usr/bin/env bash
# Installs what is missing, builds everything (Release) and runs the GoogleTest suite via ctest.
set -euo pipefail
# OpenBLAS's own threads only spin against libtorch's on small matrices (measured: same speed,
# ~2x the CPU time); one BLAS thread unless the caller says otherwise.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "${SDPO_BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "${SDPO_TEST_JOBS:-$(nproc)}" "$@"

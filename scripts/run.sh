#!/usr/bin/env bash
# Installs what is missing, builds the CLI and plugins (Release), and trains with a manifest:
#   scripts/run.sh experiments/toy/quickstart.json [--output DIR] [--set json.path=value ...]
set -euo pipefail
# OpenBLAS's own threads only spin against libtorch's on small matrices (measured: same speed,
# ~2x the CPU time); one BLAS thread unless the caller says otherwise.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: scripts/run.sh MANIFEST [--output DIR] [--set json.path=value ...]" >&2
  exit 2
fi
"$root/scripts/setup.sh"
"$root/scripts/build.sh" sdpo_runtime
cd "$root"
exec "${SDPO_BUILD_DIR:-$root/build}/bin/sdpo" train "$@"

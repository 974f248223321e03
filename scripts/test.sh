#!/usr/bin/env bash
# Installs what is missing, builds everything (Release) and runs the GoogleTest suite via ctest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "${SDPO_BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "${SDPO_TEST_JOBS:-$(nproc)}" "$@"

#!/usr/bin/env bash
# GPU check (run on a machine with an NVIDIA GPU and a CUDA PyTorch; never in CI):
#   1. builds the project against the CUDA libtorch of `python3 -c 'import torch'` through
#      CMAKE_PREFIX_PATH (the path DESIGN.md section 8 promises);
#   2. runs the whole test suite (the CUDA tests run instead of skipping);
#   3. trains the quickstart for a few epochs on the GPU and on the CPU, and records the times.
# Libraries the machine lacks can be given as Debian .deb files in $SDPO_DEBS (unpacked into a
# private prefix, never into /). Results go to ${OUT:-gpu_check_out}/gpu_check.txt.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$root/gpu_check_out}"
mkdir -p "$out"
report="$out/gpu_check.txt"
exec > >(tee -a "$report") 2>&1

prefix="$root/build-cuda-prefix"
if [ -n "${SDPO_DEBS:-}" ] && [ -d "$SDPO_DEBS" ]; then
  mkdir -p "$prefix"
  for d in "$SDPO_DEBS"/*.deb; do dpkg -x "$d" "$prefix"; done
fi
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "== torch $(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
build="$root/build-cuda"
t0=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" -DCMAKE_CXX_FLAGS="-isystem $prefix/usr/include" \
  > "$out/configure.log" 2>&1 || { echo "configure FAILED"; tail -40 "$out/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$out/build.log" 2>&1 || { echo "build FAILED"; grep -E "error|FAILED" "$out/build.log" | head -40; exit 1; }
echo "== configure + build: $(( $(date +%s) - t0 )) s"
(cd "$build" && ctest -j 8 --output-on-failure > "$out/ctest.log" 2>&1)
echo "== ctest: $(grep -E 'tests passed|tests failed' "$out/ctest.log")"
grep -E "Cuda|\*\*\*Failed|Skipped" "$out/ctest.log" | head -20
cd "$root"
for dev in cuda cpu; do
  t0=$(date +%s%N)
  "$build/bin/sdpo" train experiments/toy/quickstart.json --output "$out/quickstart_$dev" \
    --set device=$dev --set train.epochs=4 --set eval.every=4 --set output.progress=false \
    --set model.options.checkpoint= --set text_encoder.options.checkpoint= \
    --set reward.name=colorfulness --set 'reward.options={}' > "$out/quickstart_$dev.log" 2>&1
  rc=$?
  echo "== quickstart 4 epochs on $dev: rc=$rc, $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  grep -E "^eval|^epoch" "$out/quickstart_$dev.log"
done

#!/usr/bin/env bash
# The cost figures of issue 8 on one NVIDIA GPU, in about 5 minutes (benchmarks/README.md):
#   1. configure + build build-gpu/ (Release) against the CUDA libtorch of the machine's PyTorch
#      (python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'): sdpo, sdpo_runtime
#      (the plugins), sdpo_tests, and sdpo_benchmarks + sdpo_random_pipeline when Google
#      Benchmark is found;
#   2. the CUDA tests (sdpo_tests --gtest_filter='*Cuda*:*CUDA*', which skip without a GPU);
#   3. sdpo_benchmarks with a short minimum time;
#   4. `sdpo bench` of the toy quickstart (SDPO) and the toy DDPO preset on the GPU;
#   5. `sdpo bench` of one small SD-Turbo-architecture epoch (experiments/paper/
#      sdpo_sd_turbo_aesthetic.json at a few images and steps) on random weights written by
#      sdpo_random_pipeline (no download; the colorfulness reward instead of the aesthetic one);
# and writes every figure to build-gpu/gpu_check_results.txt (GPU, driver, torch version first).
# A failing step is recorded and the next one still runs; the exit status is 1 if any failed.
#
# The Debian libraries the project needs (Boost 1.81, HDF5, libpng, libturbojpeg, Gloo headers,
# GoogleTest, Google Benchmark) are usually missing on a GPU machine: fetch their .deb files on a
# Debian 12 machine with benchmarks/fetch_gpu_deps.sh, carry the folder over, and give either
#   SDPO_DEBS=/path/to/debs          unpacked here into <build>/deps with dpkg -x (never into /), or
#   SDPO_DEPS_PREFIX=/path/to/root   a folder where they are already unpacked (`dpkg -x f.deb root`).
#
# usage: benchmarks/gpu_check.sh [--cpu-dry] [--configure-only] [--skip-build] [--build-dir DIR]
#   --cpu-dry         the same steps on the CPU against the system libtorch (no GPU, no PyTorch;
#                     also SDPO_GPU_CHECK_ALLOW_CPU=1): device cpu, and the SD step on a toy-size
#                     pipeline (sdpo_random_pipeline --tiny) so that it takes seconds
#   --configure-only  stop after the configure step (checks the dependency prefix)
#   --skip-build      use the binaries already in the build folder (configured before)
#   --build-dir DIR   default build-gpu (build-gpu-cpudry with --cpu-dry)
# Environment: SDPO_TORCH_PREFIX (a libtorch CMake prefix instead of PyTorch's), SDPO_DEBS,
# SDPO_DEPS_PREFIX, SDPO_GPU_CHECK_SD=0 (skip step 5), SDPO_JOBS (build jobs, default nproc).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cpu_dry="${SDPO_GPU_CHECK_ALLOW_CPU:-0}"
configure_only=0
skip_build=0
build=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-dry) cpu_dry=1 ;;
    --configure-only) configure_only=1 ;;
    --skip-build) skip_build=1 ;;
    --build-dir) build="${2:?--build-dir needs a folder}"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;/^set -euo/d'; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$build" ]; then
  if [ "$cpu_dry" = 1 ]; then build="$root/build-gpu-cpudry"; else build="$root/build-gpu"; fi
fi
case "$build" in /*) ;; *) build="$root/$build" ;; esac
mkdir -p "$build"
results="$build/gpu_check_results.txt"
logs="$build/gpu_check_logs"
mkdir -p "$logs"
: > "$results"
failures=()

say() { echo "gpu_check: $*"; }
record() { echo "$*" | tee -a "$results"; }
fail() { failures+=("$1"); record "FAILED: $1 (log: ${2:-})"; }
seconds_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )) | awk '{printf "%.1f", $1 / 1000}'; }

# --- Where things are -----------------------------------------------------------------------
device=cuda
if [ "$cpu_dry" = 1 ]; then
  device=cpu
  say "--cpu-dry: every step on the CPU, against ${SDPO_TORCH_PREFIX:-the system libtorch}"
else
  if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
    echo "gpu_check: nvidia-smi finds no GPU (use --cpu-dry to try the steps on the CPU)" >&2
    exit 1
  fi
fi
torch_prefix="${SDPO_TORCH_PREFIX:-}"
torch_version="system libtorch (Debian)"
if [ -z "$torch_prefix" ] && [ "$cpu_dry" != 1 ]; then
  if ! torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2> "$logs/torch.log")"; then
    echo "gpu_check: python3 cannot import torch (log: $logs/torch.log); give SDPO_TORCH_PREFIX" >&2
    exit 1
  fi
fi
if command -v python3 > /dev/null && [ "$cpu_dry" != 1 ]; then
  torch_version="$(python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())' 2>/dev/null || echo unknown)"
fi

# The unpacked .deb prefix.
deps=""
if [ -n "${SDPO_DEPS_PREFIX:-}" ]; then
  deps="$(cd "$SDPO_DEPS_PREFIX" && pwd)"
elif [ -n "${SDPO_DEBS:-}" ]; then
  [ -d "$SDPO_DEBS" ] || { echo "gpu_check: SDPO_DEBS=$SDPO_DEBS is not a folder" >&2; exit 1; }
  compgen -G "$SDPO_DEBS/*.deb" > /dev/null || { echo "gpu_check: no .deb files in $SDPO_DEBS" >&2; exit 1; }
  deps="$build/deps"
  rm -rf "$deps"
  mkdir -p "$deps"
  say "unpacking $(ls "$SDPO_DEBS"/*.deb | wc -l) .deb files into $deps"
  for d in "$SDPO_DEBS"/*.deb; do dpkg -x "$d" "$deps"; done
fi
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
prefix_path="$torch_prefix"
if [ -n "$deps" ]; then
  # Absolute symlinks in the packages (e.g. libfoo.so -> /usr/lib/...) would point at this
  # machine's /usr: re-point them into the prefix.
  while IFS= read -r -d '' link; do
    target="$(readlink "$link")"
    case "$target" in /*) ln -sfn "$deps$target" "$link" ;; esac
  done < <(find "$deps" -type l -print0)
  multiarch="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
  libdir="$deps/usr/lib/$multiarch"
  # pkg-config files (libturbojpeg.pc: rewards/jpeg) name /usr: point them at the prefix too.
  for pc in "$libdir"/pkgconfig/*.pc; do
    if [ -f "$pc" ]; then sed -i -E "s#=/usr(/|\$)#=$deps/usr\1#" "$pc"; fi
  done
  export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  prefix_path="${prefix_path:+$prefix_path;}$deps/usr"
  cmake_args+=(
    "-DCMAKE_INCLUDE_PATH=$deps/usr/include"
    "-DCMAKE_LIBRARY_PATH=$libdir"
    "-DCMAKE_CXX_FLAGS=-isystem $deps/usr/include"
    # Debian's HDF5 lives in hdf5/serial (headers and library links); its h5cc is not unpacked.
    "-DHDF5_ROOT=$libdir/hdf5/serial"
    "-DHDF5_C_COMPILER_EXECUTABLE=HDF5_C_COMPILER_EXECUTABLE-NOTFOUND"
  )
  export LD_LIBRARY_PATH="$libdir:$libdir/hdf5/serial${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  glibc="$(ldd --version 2>/dev/null | head -1 | grep -oE '[0-9]+\.[0-9]+$' || echo 0)"
  if [ "$(printf '%s\n2.36\n' "$glibc" | sort -V | head -1)" != "2.36" ]; then
    say "warning: glibc $glibc is older than Debian 12's 2.36: the unpacked libraries may not load"
  fi
fi
[ -n "$prefix_path" ] && cmake_args+=("-DCMAKE_PREFIX_PATH=$prefix_path")

# --- Header of the results file -------------------------------------------------------------
record "sdpo gpu_check $(date -u +%FT%TZ) on $(hostname)"
record "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with local changes)')"
if [ "$cpu_dry" = 1 ]; then
  record "device: cpu (--cpu-dry: a rehearsal of the steps, not GPU figures), $(nproc) cores"
else
  record "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
fi
record "torch: $torch_version; libtorch prefix: ${torch_prefix:-default search}"
record "dependency prefix: ${deps:-none (system libraries)}"
record ""

# --- 1. Configure and build -----------------------------------------------------------------
jobs="${SDPO_JOBS:-$(nproc)}"
if command -v ninja > /dev/null; then generator=Ninja; build_tool=(ninja -C "$build" -j "$jobs");
else generator="Unix Makefiles"; build_tool=(make -C "$build" -j "$jobs"); fi
if [ "$skip_build" != 1 ]; then
  if [ -f "$build/CMakeCache.txt" ] && ! grep -q "CMAKE_GENERATOR:INTERNAL=$generator\$" "$build/CMakeCache.txt"; then
    generator="$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$build/CMakeCache.txt")"  # keep the folder's
    if [ "$generator" = Ninja ]; then build_tool=(ninja -C "$build" -j "$jobs"); else build_tool=(make -C "$build" -j "$jobs"); fi
  fi
  t0=$(date +%s%N)
  say "configuring $build ($generator)"
  if ! cmake -S "$root" -B "$build" -G "$generator" "${cmake_args[@]}" > "$logs/configure.log" 2>&1; then
    fail "configure" "$logs/configure.log"
    grep -E "Error|error|not found|NOTFOUND" "$logs/configure.log" | head -20
    exit 1
  fi
  record "configure: $(seconds_since "$t0") s"
  grep -E "^-- (sdpo|Found Torch|Found Boost|Found HDF5|Found PNG|Found CUDA|Caffe2: CUDA)" "$logs/configure.log" \
    | sed 's/^/  /' | tee -a "$results" || true
  [ "$configure_only" = 1 ] && { say "--configure-only: done; $results"; exit 0; }
fi
benchmarks_on=0
grep -q "^SDPO_BUILD_BENCHMARKS:BOOL=ON" "$build/CMakeCache.txt" 2>/dev/null && benchmarks_on=1
if [ "$skip_build" != 1 ]; then
  targets=(sdpo sdpo_runtime sdpo_tests)
  [ "$benchmarks_on" = 1 ] && targets+=(sdpo_benchmarks sdpo_random_pipeline)
  t0=$(date +%s%N)
  say "building ${targets[*]} with $jobs jobs"
  if ! "${build_tool[@]}" "${targets[@]}" > "$logs/build.log" 2>&1; then
    fail "build" "$logs/build.log"
    grep -E "error|FAILED" "$logs/build.log" | head -30
    exit 1
  fi
  record "build (${targets[*]}): $(seconds_since "$t0") s on $jobs jobs"
fi
[ "$benchmarks_on" = 1 ] || record "Google Benchmark not found: no sdpo_benchmarks, no SD-Turbo epoch (sdpo_random_pipeline)"
bin="$build/bin"
record ""

# --- 2. CUDA tests --------------------------------------------------------------------------
say "CUDA tests"
t0=$(date +%s%N)
if (cd "$build/tests" 2>/dev/null || cd "$build"; timeout 600 "$bin/sdpo_tests" --gtest_filter='*Cuda*:*CUDA*') \
      > "$logs/cuda_tests.log" 2>&1; then
  status=ok
else
  status=failed
  fail "CUDA tests" "$logs/cuda_tests.log"
fi
record "CUDA tests ($status, $(seconds_since "$t0") s):"
grep -E "^\[ +(OK|FAILED|SKIPPED) +\] [A-Za-z]" "$logs/cuda_tests.log" | sed -E 's/ \([0-9]+ ms\)$//' | sort -u \
  | sed 's/^/  /' | tee -a "$results" || true
record ""

# --- 3. Google Benchmark suites -------------------------------------------------------------
if [ "$benchmarks_on" = 1 ]; then
  say "sdpo_benchmarks (short minimum time)"
  t0=$(date +%s%N)
  if timeout 300 "$bin/sdpo_benchmarks" --benchmark_min_time=0.05 --benchmark_out="$logs/benchmarks.json" \
      --benchmark_out_format=json > "$logs/benchmarks.log" 2>&1; then
    record "sdpo_benchmarks ($(seconds_since "$t0") s; $logs/benchmarks.json):"
  else
    fail "sdpo_benchmarks" "$logs/benchmarks.log"
  fi
  grep -E "^(BM_|[A-Za-z_]+/)|^Benchmark|^-----" "$logs/benchmarks.log" | sed 's/^/  /' | tee -a "$results" || true
  record ""
fi

# --- 4. sdpo bench on the toy presets -------------------------------------------------------
bench() {  # name, log, sdpo bench arguments...
  local name="$1" log="$2"
  shift 2
  say "sdpo bench: $name"
  local t0
  t0=$(date +%s%N)
  if (cd "$root" && OPENBLAS_NUM_THREADS=1 timeout 600 "$bin/sdpo" bench "$@") > "$log" 2>&1; then
    record "sdpo bench $name ($(seconds_since "$t0") s in all):"
    sed -n '/^sdpo bench:/,$p' "$log" | sed 's/^/  /' | tee -a "$results"
  else
    fail "sdpo bench $name" "$log"
    tail -5 "$log" | sed 's/^/  /'
  fi
  record ""
}
bench "toy quickstart (SDPO), device $device" "$logs/bench_toy_sdpo.log" \
  experiments/toy/quickstart.json --epochs 2 --set device="$device"
bench "toy DDPO, device $device" "$logs/bench_toy_ddpo.log" \
  experiments/toy/ddpo.json --epochs 2 --set device="$device"

# --- 5. One SD-Turbo-architecture epoch on random weights -----------------------------------
if [ "${SDPO_GPU_CHECK_SD:-1}" != 0 ] && [ "$benchmarks_on" = 1 ]; then
  if [ "$cpu_dry" = 1 ]; then
    sd_dir="$build/sd_random_tiny"; sd_flags=(--tiny); dtype=float32; steps=4; images=2
  else
    sd_dir="$build/sd_turbo_random"; sd_flags=(); dtype=float16; steps=8; images=4
  fi
  if [ ! -f "$sd_dir/vae/diffusion_pytorch_model.safetensors" ]; then
    say "writing random weights into $sd_dir"
    t0=$(date +%s%N)
    if "$bin/sdpo_random_pipeline" "${sd_flags[@]}" "$sd_dir.partial" > "$logs/random_pipeline.log" 2>&1; then
      rm -rf "$sd_dir" && mv "$sd_dir.partial" "$sd_dir"
      record "random SD pipeline ${sd_flags[*]}: $(seconds_since "$t0") s"
      sed 's/^/  /' "$logs/random_pipeline.log" | tee -a "$results"
    else
      fail "sdpo_random_pipeline" "$logs/random_pipeline.log"
    fi
  fi
  if [ -f "$sd_dir/vae/diffusion_pytorch_model.safetensors" ]; then
    # SDPO as the paper preset (LoRA rank 4, DDIM eta 1, dense similarity rewards), at $images
    # images of $steps steps in one batch; float32 weight files cast to $dtype at load.
    bench "SD-Turbo architecture${sd_flags[*]:+ (${sd_flags[*]})}, random weights, $images images x $steps steps, $dtype, device $device" \
      "$logs/bench_sd.log" experiments/paper/sdpo_sd_turbo_aesthetic.json --epochs 1 \
      --set device="$device" --set model.path="$sd_dir" \
      --set model.options.variant= --set model.options.dtype="$dtype" \
      --set text_encoder.options.variant= --set text_encoder.options.dtype="$dtype" \
      --set decoder.options.variant= \
      --set reward.name=colorfulness --set 'reward.options={}' \
      --set train.batch_size="$images" --set train.batches_per_epoch=1 --set train.train_batch_size=1 \
      --set train.gradient_accumulation=2 --set sample.steps="$steps"
  fi
fi

# --- Summary --------------------------------------------------------------------------------
if [ ${#failures[@]} -eq 0 ]; then
  record "gpu_check: every step passed"
  say "results in $results"
  exit 0
fi
record "gpu_check: ${#failures[@]} step(s) failed: ${failures[*]}"
say "results in $results; logs in $logs"
exit 1

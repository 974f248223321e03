#!/usr/bin/env bash
# Builds and tests the project on Debian 13 (trixie) in a chroot: libtorch 2.6, GCC 14, HDF5 1.14,
# Boost 1.83. CI and the development machines are Debian 12 (libtorch 1.13), but a CUDA machine's
# PyTorch is a libtorch 2.x, so the code's libtorch-2 branches (c10d's Backend, the TCPStore's
# libuv default, scaled_dot_product_attention) are checked here, on the CPU, before a GPU is at hand.
#
# Then, unless --no-nccl, the NCCL path of framework/distributed/src/distributed.cpp (compiled only against a
# CUDA libtorch) is compiled against Debian 13's CUDA libtorch 2.6 headers (contrib), NCCL's and
# CUDA's (non-free), and every c10/c10d/torch/at symbol the object needs is looked up in that
# libtorch's libraries. Nothing CUDA runs: there is no GPU here.
#
# Usage (root: debootstrap, chroot and bind mounts):
#   scripts/debian13_check.sh [--no-nccl] [--no-tests]
# The chroot is kept in SDPO_DEBIAN13_ROOT (default /var/tmp/sdpo-debian13) and reused; the first
# run downloads about 0.5 GB (plus 1.6 GB for the NCCL check) from SDPO_DEBIAN_MIRROR. The
# committed HEAD is what is built (git clone), not uncommitted changes.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="${SDPO_DEBIAN13_ROOT:-/var/tmp/sdpo-debian13}"
mirror="${SDPO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
nccl=1
tests=1
for a in "$@"; do
  case "$a" in
    --no-nccl) nccl=0 ;;
    --no-tests) tests=0 ;;
    *) echo "debian13_check: unknown argument '$a' (expected --no-nccl or --no-tests)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "debian13_check: needs root (debootstrap, chroot, mount)" >&2
  exit 2
fi

packages=cmake,g++,ninja-build,pkg-config,git,xz-utils,binutils
packages+=,libtorch-dev,libopenblas0,libgloo-dev,libhdf5-dev,libturbojpeg0-dev,libpng-dev
packages+=,libboost-dev,libboost-json-dev,libboost-program-options-dev,libboost-filesystem-dev
packages+=,libgtest-dev,libbenchmark-dev,python3-h5py,python3-numpy,python3-matplotlib

if [ ! -x "$root/usr/bin/cmake" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -q --no-install-recommends debootstrap
  echo "debian13_check: debootstrap trixie into $root"
  debootstrap --variant=minbase --include="$packages" trixie "$root" "$mirror"
fi

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true; done
}
trap cleanup EXIT
cp /etc/resolv.conf "$root/etc/resolv.conf"  # apt-get in the chroot (NCCL check)
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --rbind /dev "$root/dev" && mounted+=("$root/dev")
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root bash -ec "$1"; }

# A chroot made by an earlier version of this script may lack a package added since.
missing=()
for p in ${packages//,/ }; do
  chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  in_root "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${missing[*]}"
fi

rm -rf "$root/src"
git clone -q "$repo" "$root/src"
echo "debian13_check: $(git -C "$root/src" log --oneline -1)"
in_root 'echo "libtorch $(dpkg-query -W -f="\${Version}" libtorch-dev), $(g++ --version | head -1)"'

jobs="${SDPO_JOBS:-$(nproc)}"
start=$SECONDS
in_root "cd /src && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -Wno-dev >/dev/null && ninja -C build -j $jobs"
echo "debian13_check: build $((SECONDS - start)) s"
status=0
if [ "$tests" -eq 1 ]; then
  start=$SECONDS
  in_root "cd /src/build && ctest -j $jobs --output-on-failure" || status=1
  echo "debian13_check: ctest $((SECONDS - start)) s"
fi

if [ "$nccl" -eq 1 ]; then
  # contrib (CUDA libtorch, NCCL) and non-free (CUDA headers) for apt-get download only: nothing
  # of it is installed, the packages are unpacked into /opt/cuda of the chroot.
  cat > "$root/etc/apt/sources.list.d/sdpo-cuda.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  in_root '
    apt-get update -q >/dev/null
    torch_cuda=$(apt-cache depends libtorch-cuda-dev | sed -n "s/.*Depends: \(libtorch-cuda-[0-9.]*\)$/\1/p" | head -1)
    mkdir -p /var/tmp/cuda-debs && cd /var/tmp/cuda-debs
    apt-get download -q -o APT::Sandbox::User=root libtorch-cuda-dev "$torch_cuda" libnccl-dev nvidia-cuda-dev libcu++-dev >/dev/null
    rm -rf /opt/cuda && mkdir -p /opt/cuda
    for d in *.deb; do dpkg-deb -x "$d" /opt/cuda; done'
  in_root '
    inc=/opt/cuda/usr/include
    c++ -std=gnu++17 -O1 -D_GLIBCXX_USE_CXX11_ABI=1 -DUSE_DISTRIBUTED -DUSE_C10D_GLOO -DUSE_C10D_NCCL \
        -DSDPO_HAVE_NCCL -DUSE_CUDA -I/src/framework/core/include -I/src/framework/distributed/include -isystem $inc -isystem $inc/torch/csrc/api/include \
        -c /src/framework/distributed/src/distributed.cpp -o /tmp/distributed_nccl.o
    nm -C /tmp/distributed_nccl.o | grep -q "ProcessGroupNCCL::ProcessGroupNCCL" ||
      { echo "debian13_check: the object does not construct a ProcessGroupNCCL (SDPO_HAVE_NCCL ignored?)"; exit 1; }
    lib=/opt/cuda/usr/lib/x86_64-linux-gnu
    for l in libc10 libtorch_cpu libtorch_cuda; do nm -D --defined-only "$lib/$l.so".[0-9]*.[0-9]*.[0-9]*; done |
      awk "{print \$3}" | sort -u > /tmp/defined.txt
    nm -u /tmp/distributed_nccl.o | awk "{print \$2}" | sort -u > /tmp/needed.txt
    libtorch_symbols() { c++filt | grep -E "^(c10|c10d|at|torch)::" || true; }
    missing=$(comm -23 /tmp/needed.txt /tmp/defined.txt | libtorch_symbols)
    if [ -n "$missing" ]; then echo "debian13_check: not in the CUDA libtorch:"; echo "$missing"; exit 1; fi
    echo "debian13_check: NCCL path compiled; its $(libtorch_symbols < /tmp/needed.txt | wc -l) libtorch symbols are all in $(ls $lib/libtorch_cuda.so.*.*.*)"' ||
    status=1
fi

if [ "$status" -ne 0 ]; then
  echo "debian13_check: FAILED"
  exit 1
fi
echo "debian13_check: passed"

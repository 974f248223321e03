#include "sdpo/train/threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <cstdlib>
#include <thread>

#include "sdpo/core/error.h"

namespace sdpo {

namespace {

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

constexpr int kMaxThreads = 4096;

}  // namespace

ThreadEnvironment ThreadEnvironment::current() {
  ThreadEnvironment e;
  e.sdpo_threads = env_or_empty("SDPO_THREADS");
  e.omp_num_threads = env_or_empty("OMP_NUM_THREADS");
  e.openblas_num_threads = env_or_empty("OPENBLAS_NUM_THREADS");
  e.hardware_threads = std::thread::hardware_concurrency();
  return e;
}

int parse_thread_count(const std::string& value, const std::string& what) {
  std::size_t used = 0;
  long n = 0;
  try {
    n = std::stol(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || n < 1 || n > kMaxThreads) {
    throw Error(
        what + ": expected a thread count, a whole number in 1.." + std::to_string(kMaxThreads) + ", got '" + value +
        "'");
  }
  return static_cast<int>(n);
}

ThreadSettings resolve_threads(int requested, const ThreadEnvironment& env) {
  ThreadSettings s;
  if (requested > 0) {
    s.intra_op = requested;
    s.source = "--threads";
  } else if (!env.sdpo_threads.empty()) {
    s.intra_op = parse_thread_count(env.sdpo_threads, "SDPO_THREADS");
    s.source = "SDPO_THREADS";
  } else if (!env.omp_num_threads.empty()) {
    // OpenMP itself accepts lists ("4,2" for nested levels); the first level is libtorch's.
    const std::string first = env.omp_num_threads.substr(0, env.omp_num_threads.find(','));
    s.intra_op = parse_thread_count(first, "OMP_NUM_THREADS");
    s.source = "OMP_NUM_THREADS";
  } else {
    s.intra_op = static_cast<int>(env.hardware_threads == 0 ? 1 : env.hardware_threads);
    s.source = "hardware";
  }
  // Whoever set OPENBLAS_NUM_THREADS has chosen; otherwise one BLAS thread (see the header).
  s.blas = env.openblas_num_threads.empty() ? 1 : 0;
  return s;
}

void apply_threads(const ThreadSettings& settings) {
  at::set_num_threads(settings.intra_op);
  if (settings.blas > 0) {
    // libtorch reaches BLAS through libblas.so.3, which Debian's alternatives point at OpenBLAS
    // or at the reference BLAS; only OpenBLAS has threads, and this symbol. Looked up in the
    // process's global scope, where the libraries the executable links sit.
    using SetThreads = void (*)(int);
    if (auto* f = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(settings.blas);
  }
}

int intra_op_threads() { return at::get_num_threads(); }

}  // namespace sdpo

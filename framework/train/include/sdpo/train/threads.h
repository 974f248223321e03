#pragma once
// How many CPU threads a process of the framework computes with (issue 15).
//
// A C++ process linked against Debian's libtorch starts with one intra-op thread on a 2-core
// machine (Python's torch gets 2), and nothing else sets it, so every command sets it once, at
// start: `--threads N`, else SDPO_THREADS, else OMP_NUM_THREADS, else every hardware thread.
// OpenBLAS keeps one thread of its own unless OPENBLAS_NUM_THREADS says otherwise: its threads
// only spin against libtorch's on the small matrices of these models (scripts/test.sh measured
// the same speed at twice the CPU time).
//
// Example:
//   const auto t = sdpo::resolve_threads(requested, sdpo::ThreadEnvironment::current());
//   sdpo::apply_threads(t);                       // at::set_num_threads(t.intra_op), OpenBLAS 1
//   run_file.set_attribute("intra_op_threads", std::to_string(sdpo::intra_op_threads()));
//
// Thread safety: apply_threads() is called once, from main, before any libtorch work.

#include <string>

#include "sdpo/core/api.h"

namespace sdpo {

/// The environment variables and hardware the choice reads (captured so that the rule is a pure
/// function and testable).
struct ThreadEnvironment {
  std::string sdpo_threads;          ///< SDPO_THREADS ("" when unset)
  std::string omp_num_threads;       ///< OMP_NUM_THREADS ("" when unset)
  std::string openblas_num_threads;  ///< OPENBLAS_NUM_THREADS ("" when unset)
  unsigned hardware_threads = 1;     ///< std::thread::hardware_concurrency() (0 read as 1)

  static ThreadEnvironment current();
};

struct ThreadSettings {
  int intra_op = 1;    ///< libtorch intra-op threads (at::set_num_threads)
  int blas = 1;        ///< OpenBLAS threads; 0: leave OpenBLAS as OPENBLAS_NUM_THREADS set it
  std::string source;  ///< where intra_op came from: "--threads", "SDPO_THREADS", "OMP_NUM_THREADS" or "hardware"
};

/// The rule above. `requested` > 0 is `--threads N`; 0 means "not given". A set variable that is
/// not a positive integer throws sdpo::Error naming the variable and its value.
SDPO_API ThreadSettings resolve_threads(int requested, const ThreadEnvironment& env);

/// Parses a `--threads` value: a positive integer up to 4096, else sdpo::Error naming `what`.
SDPO_API int parse_thread_count(const std::string& value, const std::string& what);

/// Sets libtorch's intra-op threads and, where the process's BLAS is OpenBLAS and `blas` > 0,
/// OpenBLAS's thread count (looked up at run time: another BLAS is left alone).
SDPO_API void apply_threads(const ThreadSettings& settings);

/// libtorch's intra-op thread count now (at::get_num_threads()).
SDPO_API int intra_op_threads();

}  // namespace sdpo

#pragma once
// `sdpo launch`: starts N local processes of one data-parallel run (docs/distributed.md), like
// torchrun --standalone. Each child is `program args...` with the environment of
// sdpo/distributed/distributed.h set (RANK = LOCAL_RANK = r, WORLD_SIZE = LOCAL_WORLD_SIZE = N,
// MASTER_ADDR = 127.0.0.1, MASTER_PORT = a free port unless given). Children's output lines are
// prefixed "[rank r] " on the launcher's stream, or written to <log_dir>/rank_<r>.log. When a child
// fails, the others get `grace_seconds` to notice and stop on their own (they name the failed rank),
// then SIGTERM, then SIGKILL. SIGINT/SIGTERM to the launcher are passed on to the children.
//
// Example:
//   sdpo::LaunchOptions o;
//   o.nproc = 2; o.program = "/path/to/sdpo"; o.args = {"train", "run.json"};
//   int status = sdpo::launch_local(o, std::cout);   // 0 when every rank exited 0

#include <ostream>
#include <string>
#include <vector>

#include "sdpo/core/api.h"

namespace sdpo {

struct LaunchOptions {
  int nproc = 1;
  std::string program;            ///< executable to start (the sdpo binary itself)
  std::vector<std::string> args;  ///< its arguments (without argv[0])
  int master_port = 0;            ///< 0: a free port, found by binding port 0
  double timeout_seconds = 0;     ///< > 0: exported as SDPO_DIST_TIMEOUT
  double grace_seconds = 10;      ///< after a failure, before the others are terminated
  std::string log_dir;            ///< empty: prefixed lines on `out`
  int threads_per_rank = 0;       ///< > 0: exported as SDPO_THREADS (sdpo/train/threads.h)
};

/// Runs the children to completion. Returns 0 when all exited 0; else the exit status of the first
/// rank that failed (128 + signal for a signal), after reporting it on `out`.
SDPO_API int launch_local(const LaunchOptions& options, std::ostream& out);

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
SDPO_API int free_tcp_port();

}  // namespace sdpo

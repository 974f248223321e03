#pragma once
// Ctrl-C and `kill` during a run: the first SIGINT or SIGTERM sets a flag that the trainer polls
// at safe points (before each sampling batch and each epoch), so the write under way finishes,
// the run file is flushed and closed, and the command exits 130 (SIGINT) or 143 (SIGTERM) saying
// how to resume. A second signal exits at once. Child processes (reward servers) are stopped by
// their owners' destructors on the way out; `sdpo launch` forwards signals to its ranks.
//
// Example:
//   sdpo::install_interrupt_handlers();   // once, in main
//   ...
//   sdpo::check_interrupt();              // throws sdpo::Interrupted after a signal

#include <string>

#include "sdpo/core/error.h"

namespace sdpo {

/// Thrown by check_interrupt() after SIGINT or SIGTERM.
class Interrupted : public Error {
 public:
  explicit Interrupted(int signal);
  int signal() const { return signal_; }
  /// 128 + the signal: 130 for SIGINT, 143 for SIGTERM.
  int exit_status() const { return 128 + signal_; }

 private:
  int signal_;
};

/// Installs the SIGINT and SIGTERM handlers (idempotent).
void install_interrupt_handlers();

/// The signal received since the handlers were installed, or 0.
int interrupt_signal();

/// Throws Interrupted when a signal was received.
void check_interrupt();

/// Test hook: forgets a received signal.
void clear_interrupt();

}  // namespace sdpo

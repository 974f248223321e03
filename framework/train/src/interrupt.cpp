#include "sdpo/train/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace sdpo {

namespace {

volatile sig_atomic_t g_signal = 0;

// Async-signal-safe: a flag, and on the second signal a write and _exit.
extern "C" void on_signal(int sig) {
  if (g_signal != 0) {
    const char msg[] = "\nsdpo: second signal: exiting now (the run file may hold a partial epoch)\n";
    ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(128 + sig);
  }
  g_signal = sig;
}

}  // namespace

Interrupted::Interrupted(int signal)
    : Error(
          std::string("interrupted by ") + (signal == SIGINT    ? "SIGINT"
                                            : signal == SIGTERM ? "SIGTERM"
                                                                : "a signal")),
      signal_(signal) {}

void install_interrupt_handlers() {
  static std::atomic<bool> installed{false};
  if (installed.exchange(true)) return;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // reads and writes in progress go on; the flag is polled
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

int interrupt_signal() { return static_cast<int>(g_signal); }

void check_interrupt() {
  const int sig = interrupt_signal();
  if (sig != 0) throw Interrupted(sig);
}

void clear_interrupt() { g_signal = 0; }

}  // namespace sdpo

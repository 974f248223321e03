#pragma once
// A child process with pipes on its stdin and stdout (stderr is shared with ours), for the
// `reward_server` reward. Every POSIX call the plugin makes (pipe2, fcntl, posix_spawnp, poll,
// read, write, waitpid, kill, close, the signal mask) is wrapped once, in subprocess.cpp; a
// failing call throws SystemCallError with the call's name and errno text.
//
// Example:
//   Subprocess p({"/usr/bin/python3", "server.py"});
//   auto deadline = Subprocess::Clock::now() + std::chrono::seconds(5);
//   if (p.write_all(data.data(), data.size(), deadline) != Subprocess::Io::kDone) ...
//   std::string line;
//   if (p.read_line(line, deadline, 1 << 20) == Subprocess::Io::kDone) ...
//
// I/O never blocks past its deadline (our pipe ends are non-blocking and waited on with poll),
// and writing to a child that has exited returns kClosed instead of raising SIGPIPE. Both of our
// pipe ends are close-on-exec, so other children of the process never hold them (a crashed
// server's stdout reaches EOF). The destructor stops the child and reaps it.
//
// Thread safety: none; one thread at a time per object.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "sdpo/core/error.h"

namespace sdpo::reward_server {

/// A POSIX call failed: "<call>: <errno text>", e.g. "posix_spawnp '/x': No such file or directory".
class SystemCallError : public sdpo::Error {
 public:
  using sdpo::Error::Error;
};

/// How a child ended (from waitpid).
struct ExitStatus {
  bool signaled = false;  ///< killed by a signal (`code` is then the signal number)
  int code = 0;           ///< exit status, or signal number
  bool killed = false;    ///< stop() had to kill it: it had not exited within the grace
  /// "exited with status 3", "was killed by signal 9 (Killed)".
  std::string describe() const;
};

/// A file descriptor closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();
  void reset();

 private:
  int fd_ = -1;
};

class Subprocess {
 public:
  using Clock = std::chrono::steady_clock;

  /// Outcome of one read or write: done, the deadline passed, the child closed its end (exited,
  /// crashed, or closed the pipe), or a line grew past its limit without a newline.
  enum class Io { kDone, kTimeout, kClosed, kTooLong };

  /// Starts `argv` (argv[0] is looked up in PATH when it has no slash; no shell). Throws
  /// SystemCallError naming the call and errno text when the program cannot be started.
  explicit Subprocess(const std::vector<std::string>& argv);
  /// stop(kShutdownGrace); never throws.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  /// Writes all `size` bytes to the child's stdin.
  Io write_all(const void* data, std::size_t size, Clock::time_point deadline);
  /// Reads one line from the child's stdout into `line` (without the newline).
  Io read_line(std::string& line, Clock::time_point deadline, std::size_t max_bytes);

  /// The child's exit status once it has exited (reaping it); nullopt while it runs.
  std::optional<ExitStatus> try_wait();
  /// Closes the child's stdin (a well-behaved server exits on EOF), waits up to `grace` for it to
  /// exit, then kills it with SIGKILL, and reaps it. Returns how it ended; idempotent.
  ExitStatus stop(std::chrono::milliseconds grace);

  /// Grace the destructor gives a server to exit on EOF before SIGKILL.
  static constexpr std::chrono::milliseconds kShutdownGrace{1000};

 private:
  pid_t pid_ = -1;
  Fd to_child_;         ///< our end of the child's stdin
  Fd from_child_;       ///< our end of the child's stdout
  std::string buffer_;  ///< bytes read past the last returned line
  std::optional<ExitStatus> status_;
  bool group_killed_ = false;  ///< stop() has sent SIGKILL to the process group once
};

}  // namespace sdpo::reward_server

// The POSIX side of the `reward_server` reward: one wrapper per C library call, each turning a
// failure into SystemCallError with the call's name and errno text, and the Subprocess built on them.

#include "subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <system_error>
#include <thread>
#include <utility>

#include "sdpo/core/error.h"

extern char** environ;

namespace sdpo::reward_server {
namespace {

using Clock = Subprocess::Clock;

[[noreturn]] void fail_call(const std::string& call, int err) {
  throw SystemCallError(call + ": " + std::generic_category().message(err));
}

// ---- One wrapper per C call --------------------------------------------------------------

void close_fd(int fd) {
  // Linux releases the descriptor even when close() reports EINTR, so there is nothing to retry
  // and nothing useful to report from a destructor.
  ::close(fd);
}

// Both ends close-on-exec: a child started later (another reward_server instance, or anything
// else the process spawns) must not inherit them, or a crashed server's stdout would never reach
// EOF while that other child holds a copy of its write end.
std::pair<Fd, Fd> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) fail_call("pipe2", errno);
  return {Fd(fds[0]), Fd(fds[1])};
}

// Only our ends: O_NONBLOCK belongs to the open file description, and the child's ends are other
// descriptions, so the server still sees ordinary blocking pipes.
void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) fail_call("fcntl(O_NONBLOCK)", errno);
}

// posix_spawnp rather than fork + exec: the process runs libtorch's thread pools, and between a
// fork and its exec only async-signal-safe calls are allowed; posix_spawn does that part inside
// libc (and reports a failed exec, e.g. ENOENT, as its return value).
pid_t spawn(const std::vector<std::string>& argv, int child_stdin, int child_stdout) {
  struct Actions {
    posix_spawn_file_actions_t a;
    Actions() {
      if (int rc = ::posix_spawn_file_actions_init(&a)) fail_call("posix_spawn_file_actions_init", rc);
    }
    ~Actions() { ::posix_spawn_file_actions_destroy(&a); }
  } actions;
  struct Attr {
    posix_spawnattr_t a;
    Attr() {
      if (int rc = ::posix_spawnattr_init(&a)) fail_call("posix_spawnattr_init", rc);
    }
    ~Attr() { ::posix_spawnattr_destroy(&a); }
  } attr;
  // dup2 onto 0 and 1 clears close-on-exec on the copies, so the server gets exactly these pipes.
  if (int rc = ::posix_spawn_file_actions_adddup2(&actions.a, child_stdin, STDIN_FILENO))
    fail_call("posix_spawn_file_actions_adddup2", rc);
  if (int rc = ::posix_spawn_file_actions_adddup2(&actions.a, child_stdout, STDOUT_FILENO))
    fail_call("posix_spawn_file_actions_adddup2", rc);
  // The server starts with no blocked signals and SIGPIPE at its default, whatever the spawning
  // thread had (write_some below blocks SIGPIPE around writes; an ignored signal would be inherited
  // across exec).
  sigset_t none, pipe_only;
  sigemptyset(&none);
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  if (int rc = ::posix_spawnattr_setsigmask(&attr.a, &none)) fail_call("posix_spawnattr_setsigmask", rc);
  if (int rc = ::posix_spawnattr_setsigdefault(&attr.a, &pipe_only)) fail_call("posix_spawnattr_setsigdefault", rc);
  // Its own process group (pgid = its pid): stop() kills the group, so the server's own children
  // go with it, and a Ctrl-C at the terminal reaches only sdpo, which stops the server itself.
  if (int rc = ::posix_spawnattr_setpgroup(&attr.a, 0)) fail_call("posix_spawnattr_setpgroup", rc);
  if (int rc =
          ::posix_spawnattr_setflags(&attr.a, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
    fail_call("posix_spawnattr_setflags", rc);

  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  if (int rc = ::posix_spawnp(&pid, args[0], &actions.a, &attr.a, args.data(), environ))
    fail_call("posix_spawnp '" + argv[0] + "'", rc);
  return pid;
}

int poll_timeout_ms(Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  // Round up: a poll that returns a little early only costs one more loop.
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(left).count() + 1;
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

// Waits until `fd` has one of `events` (or an error/hang-up), or the deadline passes. Returns the
// revents, 0 on timeout.
short poll_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, poll_timeout_ms(deadline));
    if (n > 0) return p.revents;
    if (n == 0) {
      if (Clock::now() >= deadline) return 0;
      continue;
    }
    if (errno != EINTR) fail_call("poll", errno);
  }
}

// Bytes read; 0 at end of file; -1 when nothing is available yet.
ssize_t read_some(int fd, char* buffer, std::size_t size) {
  for (;;) {
    const ssize_t n = ::read(fd, buffer, size);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    fail_call("read", errno);
  }
}

// Writing to a pipe whose reader has exited raises SIGPIPE, whose default action kills the whole
// training process. MSG_NOSIGNAL exists only for sockets, and ignoring SIGPIPE process-wide would
// change behaviour the host relies on elsewhere (`sdpo ... | head` ending quietly), so SIGPIPE is
// blocked in this thread for the duration of the write. The signal write() then raises is
// thread-directed and stays pending; after an EPIPE it is taken with a zero-timeout sigtimedwait
// (unless one was already pending before, which is not ours to take) before the mask is restored.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    if (::sigpending(&pending) != 0) fail_call("sigpending", errno);
    already_pending_ = sigismember(&pending, SIGPIPE) == 1;
    if (int rc = ::pthread_sigmask(SIG_BLOCK, &pipe_, &old_)) fail_call("pthread_sigmask", rc);
  }
  ~SigpipeBlocked() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

  void consume_raised() {
    if (already_pending_) return;
    const timespec zero{0, 0};
    while (::sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }

 private:
  sigset_t pipe_, old_;
  bool already_pending_ = false;
};

// Bytes written; 0 when the pipe is full; -1 when the reader is gone (EPIPE).
ssize_t write_some(int fd, const char* data, std::size_t size) {
  SigpipeBlocked blocked;
  for (;;) {
    const ssize_t n = ::write(fd, data, size);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    if (errno == EPIPE) {
      blocked.consume_raised();
      return -1;
    }
    fail_call("write", errno);
  }
}

ExitStatus decode_status(int status) {
  ExitStatus s;
  if (WIFSIGNALED(status)) {
    s.signaled = true;
    s.code = WTERMSIG(status);
  } else {
    s.code = WEXITSTATUS(status);
  }
  return s;
}

// The child's status if it has exited (reaped), nullopt if it is still running and !block.
std::optional<ExitStatus> wait_child(pid_t pid, bool block) {
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, block ? 0 : WNOHANG);
    if (r == pid) return decode_status(status);
    if (r == 0) return std::nullopt;
    if (errno == EINTR) continue;
    if (errno == ECHILD) {
      // Someone else reaped it (a host that set SIGCHLD to SIG_IGN): it is gone, status unknown.
      ExitStatus s;
      s.code = -1;
      return s;
    }
    fail_call("waitpid", errno);
  }
}

void send_signal(pid_t pid, int sig) {
  // ESRCH cannot happen for an unreaped child (a zombie still accepts signals); any error means
  // the pid is not ours to signal.
  if (::kill(pid, sig) != 0) fail_call("kill(" + std::to_string(pid) + ")", errno);
}

std::string signal_name(int sig) {
  const char* d = ::strsignal(sig);
  return d ? d : "unknown signal";
}

}  // namespace

// ---- ExitStatus, Fd ----------------------------------------------------------------------

std::string ExitStatus::describe() const {
  if (killed) return "did not exit and was killed with SIGKILL";
  if (signaled) return "was killed by signal " + std::to_string(code) + " (" + signal_name(code) + ")";
  if (code < 0) return "exited (its status was collected by someone else)";
  return "exited with status " + std::to_string(code);
}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.release();
  }
  return *this;
}

int Fd::release() { return std::exchange(fd_, -1); }

void Fd::reset() {
  if (fd_ >= 0) close_fd(std::exchange(fd_, -1));
}

// ---- Subprocess --------------------------------------------------------------------------

Subprocess::Subprocess(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0].empty()) throw SystemCallError("no program to start (empty command)");
  auto [stdin_read, stdin_write] = make_pipe();
  auto [stdout_read, stdout_write] = make_pipe();
  set_nonblocking(stdin_write.get());
  set_nonblocking(stdout_read.get());
  pid_ = spawn(argv, stdin_read.get(), stdout_write.get());
  to_child_ = std::move(stdin_write);
  from_child_ = std::move(stdout_read);
  // stdin_read and stdout_write close here: from now on only the child holds them, so its exit
  // is seen as EOF on from_child_ and as EPIPE on to_child_.
}

Subprocess::~Subprocess() {
  try {
    stop(kShutdownGrace);
  } catch (...) {
    // A destructor cannot report; stop() only throws if waitpid/kill fail for a pid we own.
  }
}

Subprocess::Io Subprocess::write_all(const void* data, std::size_t size, Clock::time_point deadline) {
  if (!to_child_.valid()) return Io::kClosed;
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = write_some(to_child_.get(), p, size);
    if (n < 0) return Io::kClosed;
    if (n > 0) {
      p += n;
      size -= static_cast<std::size_t>(n);
      continue;
    }
    // Pipe full: wait for room. POLLERR (reader gone) makes the next write report EPIPE.
    if (poll_fd(to_child_.get(), POLLOUT, deadline) == 0) return Io::kTimeout;
  }
  return Io::kDone;
}

Subprocess::Io Subprocess::read_line(std::string& line, Clock::time_point deadline, std::size_t max_bytes) {
  std::size_t scanned = 0;
  for (;;) {
    const std::size_t nl = buffer_.find('\n', scanned);
    if (nl != std::string::npos) {
      line.assign(buffer_, 0, nl);
      buffer_.erase(0, nl + 1);
      return Io::kDone;
    }
    if (buffer_.size() > max_bytes) return Io::kTooLong;
    scanned = buffer_.size();
    if (!from_child_.valid()) return Io::kClosed;
    char chunk[1 << 16];
    const ssize_t n = read_some(from_child_.get(), chunk, sizeof chunk);
    if (n > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) return Io::kClosed;
    // Nothing yet: POLLHUP (the child closed its stdout) also wakes us, and read() then sees EOF.
    if (poll_fd(from_child_.get(), POLLIN, deadline) == 0) return Io::kTimeout;
  }
}

std::optional<ExitStatus> Subprocess::try_wait() {
  if (!status_ && pid_ > 0) status_ = wait_child(pid_, /*block=*/false);
  return status_;
}

ExitStatus Subprocess::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return ExitStatus{};
  to_child_.reset();  // EOF on the server's stdin
  if (!status_) {
    const auto until = Clock::now() + grace;
    // A short sleep between checks: the server needs a few milliseconds to notice EOF and exit,
    // and waiting on SIGCHLD instead would mean owning a process-wide signal handler.
    while (!try_wait() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!status_) {
    send_signal(pid_, SIGKILL);
    status_ = wait_child(pid_, /*block=*/true);
    // It may have exited on its own between the last check and the kill.
    status_->killed = status_->signaled && status_->code == SIGKILL;
  }
  // Whatever the server started and left behind (its process group) goes too; ESRCH: nothing left.
  if (!group_killed_) {
    group_killed_ = true;
    ::kill(-pid_, SIGKILL);
  }
  from_child_.reset();
  buffer_.clear();
  return *status_;
}

}  // namespace sdpo::reward_server

// The local launcher of sdpo/distributed/launch.h: fork/exec, output relay, failure propagation.
#include "sdpo/distributed/launch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "sdpo/core/error.h"

namespace sdpo {

namespace {

std::atomic<int> g_forward_signal{0};

extern "C" void remember_signal(int sig) { g_forward_signal = sig; }

struct Child {
  pid_t pid = -1;
  int out_fd = -1;      // read end of the child's stdout+stderr
  std::string partial;  // an unfinished output line
  std::unique_ptr<std::ofstream> log;
  bool exited = false;
  int status = 0;  // exit code, or 128 + signal
};

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The child after fork: the rank's environment, output into the pipe, then the program. Only
// async-signal-safe calls would be strictly correct after fork in a threaded parent; the launcher
// has no threads of its own (it starts no libtorch work before forking).
[[noreturn]] void exec_rank(const LaunchOptions& o, int rank, int port, const int fds[2]) {
  ::dup2(fds[1], STDOUT_FILENO);
  ::dup2(fds[1], STDERR_FILENO);
  ::close(fds[0]);
  ::close(fds[1]);
  const std::string n = std::to_string(o.nproc), r = std::to_string(rank);
  if (o.threads_per_rank > 0) ::setenv("SDPO_THREADS", std::to_string(o.threads_per_rank).c_str(), 1);
  ::setenv("RANK", r.c_str(), 1);
  ::setenv("LOCAL_RANK", r.c_str(), 1);
  ::setenv("WORLD_SIZE", n.c_str(), 1);
  ::setenv("LOCAL_WORLD_SIZE", n.c_str(), 1);
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
  if (o.timeout_seconds > 0) ::setenv("SDPO_DIST_TIMEOUT", std::to_string(o.timeout_seconds).c_str(), 1);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(o.program.c_str()));
  for (const auto& a : o.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(o.program.c_str(), argv.data());
  const std::string msg = "sdpo launch: cannot start " + o.program + ": " + std::strerror(errno) + "\n";
  (void)!::write(STDERR_FILENO, msg.data(), msg.size());
  ::_exit(127);
}

// The ranks of one launch, in three duties: spawn them, relay their output lines, and supervise
// them (reap exits, note the first failure, pass on signals, and after a failure give the others
// the grace period, then SIGTERM, then SIGKILL).
class LocalGroup {
 public:
  LocalGroup(const LaunchOptions& o, std::ostream& out)
      : o_(o), out_(out), children_(static_cast<std::size_t>(o.nproc)) {}

  // Spawn: fork and exec every rank, each with its output pipe (and log file).
  void spawn(int port) {
    for (int r = 0; r < o_.nproc; ++r) {
      int fds[2];
      if (::pipe(fds) != 0) {
        terminate_all(SIGKILL);
        throw Error(std::string("launch: pipe(): ") + std::strerror(errno));
      }
      const pid_t pid = ::fork();
      if (pid < 0) {
        terminate_all(SIGKILL);
        throw Error(std::string("launch: fork(): ") + std::strerror(errno));
      }
      if (pid == 0) exec_rank(o_, r, port, fds);
      ::close(fds[1]);
      ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
      auto& c = children_[static_cast<std::size_t>(r)];
      c.pid = pid;
      c.out_fd = fds[0];
      if (!o_.log_dir.empty()) {
        c.log =
            std::make_unique<std::ofstream>(std::filesystem::path(o_.log_dir) / ("rank_" + std::to_string(r) + ".log"));
      }
    }
  }

  // Relay: waits up to 100 ms for output and passes on every complete line.
  void relay() {
    std::vector<pollfd> fds;
    std::vector<std::size_t> owner;
    for (std::size_t r = 0; r < children_.size(); ++r) {
      if (children_[r].out_fd >= 0) {
        fds.push_back({children_[r].out_fd, POLLIN, 0});
        owner.push_back(r);
      }
    }
    if (fds.empty()) {
      ::usleep(20000);
      return;
    }
    ::poll(fds.data(), fds.size(), 100);
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents != 0) drain(owner[i]);
    }
  }

  // Supervise: one round of reaping exits, forwarding a signal and escalating after a failure.
  void supervise() {
    reap();
    if (g_forward_signal != 0) {
      terminate_all(g_forward_signal.exchange(0));
      if (failed_rank_ < 0) {
        failed_rank_ = -2;  // interrupted: no rank failed, but the run did not complete
        result_ = 130;
        failed_at_ = std::chrono::steady_clock::now();
      }
    }
    if (failed_rank_ != -1) {
      if (stop_stage_ == 0 && since(failed_at_) > o_.grace_seconds) {
        terminate_all(SIGTERM);
        stop_stage_ = 1;
      } else if (stop_stage_ == 1 && since(failed_at_) > o_.grace_seconds + 5) {
        terminate_all(SIGKILL);
        stop_stage_ = 2;
      }
    }
    // A child that exited but left its pipe open to a grandchild: stop reading it eventually.
    for (auto& c : children_) {
      if (c.exited && c.out_fd >= 0 && stop_stage_ == 2) {
        ::close(c.out_fd);
        c.out_fd = -1;
      }
    }
  }

  bool done() const {
    for (const auto& c : children_) {
      if (!c.exited || c.out_fd >= 0) return false;
    }
    return true;
  }

  // 0 when every rank exited 0, else the first failure's status (130 when interrupted).
  int result() const {
    int result = result_;
    if (result == 0) {
      for (const auto& c : children_) {
        if (c.status != 0) result = c.status;
      }
    }
    return result;
  }

  void terminate_all(int sig) {
    for (auto& c : children_) {
      if (c.pid > 0 && !c.exited) ::kill(c.pid, sig);
    }
  }

 private:
  void emit(std::size_t r, const std::string& line) {
    auto& c = children_[r];
    if (c.log) {
      *c.log << line << '\n';
      c.log->flush();
    } else {
      out_ << "[rank " << r << "] " << line << '\n';
    }
  }

  // Reads what is there; closes the pipe at EOF.
  void drain(std::size_t r) {
    auto& c = children_[r];
    char buf[4096];
    for (;;) {
      const ssize_t k = ::read(c.out_fd, buf, sizeof buf);
      if (k > 0) {
        c.partial.append(buf, static_cast<std::size_t>(k));
        std::size_t nl;
        while ((nl = c.partial.find('\n')) != std::string::npos) {
          emit(r, c.partial.substr(0, nl));
          c.partial.erase(0, nl + 1);
        }
        continue;
      }
      if (k < 0 && (errno == EAGAIN || errno == EINTR)) return;
      if (!c.partial.empty()) emit(r, c.partial);
      c.partial.clear();
      ::close(c.out_fd);
      c.out_fd = -1;
      return;
    }
  }

  void reap() {
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (std::size_t r = 0; r < children_.size(); ++r) {
        auto& c = children_[r];
        if (c.pid != pid) continue;
        c.exited = true;
        c.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (c.status != 0 && failed_rank_ < 0) {
          failed_rank_ = static_cast<int>(r);
          result_ = c.status;
          failed_at_ = std::chrono::steady_clock::now();
          out_ << "sdpo launch: rank " << r << " failed ("
               << (WIFEXITED(status) ? "exit status " + std::to_string(c.status)
                                     : std::string("signal ") + strsignal(WTERMSIG(status)))
               << "); the other ranks get " << o_.grace_seconds << " s to stop before they are terminated" << std::endl;
        }
      }
    }
  }

  const LaunchOptions& o_;
  std::ostream& out_;
  std::vector<Child> children_;
  int failed_rank_ = -1;  // -1: none; -2: interrupted by a signal
  int result_ = 0;
  std::chrono::steady_clock::time_point failed_at_;
  int stop_stage_ = 0;  // 1: SIGTERM sent, 2: SIGKILL sent
};

}  // namespace

int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(std::string("launch: socket(): ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    throw Error("launch: cannot find a free TCP port: " + why);
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

int launch_local(const LaunchOptions& o, std::ostream& out) {
  if (o.nproc < 1) throw Error("launch: --nproc must be at least 1");
  if (o.program.empty()) throw Error("launch: no program to start");
  const int port = o.master_port > 0 ? o.master_port : free_tcp_port();
  if (!o.log_dir.empty()) std::filesystem::create_directories(o.log_dir);
  out << "sdpo launch: " << o.nproc << " ranks, MASTER_ADDR=127.0.0.1 MASTER_PORT=" << port
      << (o.log_dir.empty() ? "" : ", logs in " + o.log_dir + "/rank_<r>.log") << std::endl;

  LocalGroup group(o, out);
  group.spawn(port);
  struct sigaction sa {
  }, old_int{}, old_term{};
  sa.sa_handler = remember_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  for (;;) {
    group.relay();
    group.supervise();
    if (group.done()) break;
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  const int result = group.result();
  if (result == 0) out << "sdpo launch: all " << o.nproc << " ranks finished" << std::endl;
  return result;
}

}  // namespace sdpo

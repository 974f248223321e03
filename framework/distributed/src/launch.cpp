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

  std::vector<Child> children(static_cast<std::size_t>(o.nproc));
  auto terminate_all = [&](int sig) {
    for (auto& c : children) {
      if (c.pid > 0 && !c.exited) ::kill(c.pid, sig);
    }
  };
  for (int r = 0; r < o.nproc; ++r) {
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
    if (pid == 0) {
      // The child: environment, output into the pipe, then the program. Only async-signal-safe
      // calls would be strictly correct after fork in a threaded parent; the launcher has no
      // threads of its own (it starts no libtorch work before forking).
      ::dup2(fds[1], STDOUT_FILENO);
      ::dup2(fds[1], STDERR_FILENO);
      ::close(fds[0]);
      ::close(fds[1]);
      const std::string n = std::to_string(o.nproc), rank = std::to_string(r);
      if (o.threads_per_rank > 0) ::setenv("SDPO_THREADS", std::to_string(o.threads_per_rank).c_str(), 1);
      ::setenv("RANK", rank.c_str(), 1);
      ::setenv("LOCAL_RANK", rank.c_str(), 1);
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
    ::close(fds[1]);
    ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    auto& c = children[static_cast<std::size_t>(r)];
    c.pid = pid;
    c.out_fd = fds[0];
    if (!o.log_dir.empty()) {
      c.log =
          std::make_unique<std::ofstream>(std::filesystem::path(o.log_dir) / ("rank_" + std::to_string(r) + ".log"));
    }
  }

  struct sigaction sa {
  }, old_int{}, old_term{};
  sa.sa_handler = remember_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);

  auto emit = [&](std::size_t r, const std::string& line) {
    auto& c = children[r];
    if (c.log) {
      *c.log << line << '\n';
      c.log->flush();
    } else {
      out << "[rank " << r << "] " << line << '\n';
    }
  };
  auto drain = [&](std::size_t r) {  // reads what is there; closes the pipe at EOF
    auto& c = children[r];
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
  };

  int failed_rank = -1, result = 0;
  std::chrono::steady_clock::time_point failed_at;
  int stop_stage = 0;  // 1: SIGTERM sent, 2: SIGKILL sent
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<std::size_t> owner;
    for (std::size_t r = 0; r < children.size(); ++r) {
      if (children[r].out_fd >= 0) {
        fds.push_back({children[r].out_fd, POLLIN, 0});
        owner.push_back(r);
      }
    }
    if (!fds.empty()) {
      ::poll(fds.data(), fds.size(), 100);
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].revents != 0) drain(owner[i]);
      }
    } else {
      ::usleep(20000);
    }
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (std::size_t r = 0; r < children.size(); ++r) {
        auto& c = children[r];
        if (c.pid != pid) continue;
        c.exited = true;
        c.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (c.status != 0 && failed_rank < 0) {
          failed_rank = static_cast<int>(r);
          result = c.status;
          failed_at = std::chrono::steady_clock::now();
          out << "sdpo launch: rank " << r << " failed ("
              << (WIFEXITED(status) ? "exit status " + std::to_string(c.status)
                                    : std::string("signal ") + strsignal(WTERMSIG(status)))
              << "); the other ranks get " << o.grace_seconds << " s to stop before they are terminated" << std::endl;
        }
      }
    }
    if (g_forward_signal != 0) {
      terminate_all(g_forward_signal.exchange(0));
      if (failed_rank < 0) {
        failed_rank = -2;  // interrupted: no rank failed, but the run did not complete
        result = 130;
        failed_at = std::chrono::steady_clock::now();
      }
    }
    bool all_done = true;
    for (const auto& c : children) all_done = all_done && c.exited && c.out_fd < 0;
    if (all_done) break;
    if (failed_rank != -1) {
      if (stop_stage == 0 && since(failed_at) > o.grace_seconds) {
        terminate_all(SIGTERM);
        stop_stage = 1;
      } else if (stop_stage == 1 && since(failed_at) > o.grace_seconds + 5) {
        terminate_all(SIGKILL);
        stop_stage = 2;
      }
    }
    // A child that exited but left its pipe open to a grandchild: stop reading it eventually.
    for (std::size_t r = 0; r < children.size(); ++r) {
      auto& c = children[r];
      if (c.exited && c.out_fd >= 0 && stop_stage == 2) {
        ::close(c.out_fd);
        c.out_fd = -1;
      }
    }
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  if (result == 0) {
    for (const auto& c : children) {
      if (c.status != 0) result = c.status;
    }
  }
  if (result == 0) out << "sdpo launch: all " << o.nproc << " ranks finished" << std::endl;
  return result;
}

}  // namespace sdpo

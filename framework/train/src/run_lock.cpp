#include "sdpo/train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "sdpo/core/error.h"

namespace sdpo {
namespace fs = std::filesystem;

namespace {

// The pid the holder wrote, or "" when the file is empty or unreadable (the holder may be
// between its flock and its write).
std::string read_holder(int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return "";
  std::string s(buf, static_cast<std::size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

std::string RunFolderLock::lock_path(const std::string& run_dir) { return (fs::path(run_dir) / ".sdpo.lock").string(); }

RunFolderLock::RunFolderLock(const std::string& run_dir) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) throw FileError(run_dir, "cannot create the run folder: " + ec.message());
  const std::string path = lock_path(run_dir);
  // O_CLOEXEC: reward servers and other children must not inherit (and so hold) the lock.
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw FileError(path, std::string("cannot open the run folder's lock file: ") + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = read_holder(fd_);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK) {
      throw Error(
          "run folder " + run_dir + " is being written by " +
          (holder.empty() ? "another process" : "process " + holder) + " (lock " + path +
          "); wait for it to finish, or write to another --output");
    }
    throw FileError(path, std::string("cannot lock the run folder: ") + std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw FileError(path, std::string("cannot write the run folder's lock file: ") + std::strerror(err));
  }
}

RunFolderLock::~RunFolderLock() {
  if (fd_ < 0) return;
  // The file stays (removing it would race with a writer that opened it and waits to lock it);
  // emptying it says nobody holds it.
  if (::ftruncate(fd_, 0) != 0) { /* the lock is released by close() either way */
  }
  ::flock(fd_, LOCK_UN);
  ::close(fd_);
}

}  // namespace sdpo

#pragma once
// Ownership of a run folder while a process writes it: an advisory lock (flock) on
// `<run_dir>/.sdpo.lock`, which holds the writer's pid. A second writer (another `sdpo train`,
// or `sdpo experiment` on the same run) is refused with an Error naming that pid, instead of both
// writing run.h5. The kernel drops the lock when the process ends in any way (a kill included),
// so a stale lock file never blocks a later run.
//
// Example:
//   sdpo::RunFolderLock lock(dir);  // throws sdpo::Error if another process holds it
//   ... write run.h5, checkpoints ...
//   // released when `lock` goes out of scope

#include <string>

namespace sdpo {

class RunFolderLock {
 public:
  /// Creates `run_dir` if needed, then takes the lock without waiting. Throws sdpo::Error when
  /// another process (or another lock in this one) holds it, naming the holder's pid, or when
  /// the lock file cannot be opened (with the errno text).
  explicit RunFolderLock(const std::string& run_dir);
  ~RunFolderLock();
  RunFolderLock(const RunFolderLock&) = delete;
  RunFolderLock& operator=(const RunFolderLock&) = delete;

  /// `<run_dir>/.sdpo.lock`.
  static std::string lock_path(const std::string& run_dir);

 private:
  int fd_ = -1;
};

}  // namespace sdpo

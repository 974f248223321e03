// A kill at any moment of `sdpo train --resume` (its rollback of run.h5 included) leaves a run
// folder that the next --resume continues, ending bit for bit where an unbroken run ends: the
// rollback is written to a copy and renamed into place (trainer.cpp, resume()).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "sdpo/train/run_file.h"
#include "sdpo/train/run_folder.h"
#include "support/run_compare.h"
#include "support/test_support.h"

namespace {

// sdpo train MANIFEST --output OUT --threads 1 [--resume] with the test's settings, stdout and
// stderr to LOG; returns the child's pid.
pid_t spawn_train(const std::string& manifest, const std::string& out, bool resume, const std::string& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    std::vector<const char*> argv{
        SDPO_CLI,         "train", manifest.c_str(),           "--output", out.c_str(),   "--threads", "1", "--set",
        "train.epochs=4", "--set", "train.checkpoint_every=2", "--set",    "eval.every=1"};
    if (resume) argv.push_back("--resume");
    argv.push_back(nullptr);
    ::execv(SDPO_CLI, const_cast<char* const*>(argv.data()));
    ::_exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(ResumeKill, AKillAtAnyMomentOfAResumeLeavesARunTheNextResumeContinues) {
  const auto dir = sdpo::test::temp_dir("resume_kill");
  const auto manifest = dir + "/micro.json", log = dir + "/log.txt";
  std::ofstream(manifest) << sdpo::test::micro_algorithm_manifest("sdpo");
  const auto straight = dir + "/straight", broken = dir + "/broken";
  ASSERT_EQ(wait_exit(spawn_train(manifest, straight, false, log)), 0) << sdpo::test::read_text(log);

  // The broken run: killed once it logged epoch 3 (checkpoint at 2), so every resume rolls back.
  const pid_t first = spawn_train(manifest, broken, false, log);
  for (int i = 0; i < 1200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (sdpo::last_checkpoint_epoch(broken) >= 2 && sdpo::inspect_run_folder(broken, 4).epochs_logged >= 3) break;
  }
  ::kill(first, SIGKILL);
  wait_exit(first);
  ASSERT_EQ(sdpo::last_checkpoint_epoch(broken), 2) << sdpo::test::read_text(log);

  // From a copy of that folder each time: a resume killed after 0 to 450 ms (the component
  // build, the rollback of run.h5, the first epochs after it), then one left to finish.
  const auto pristine = dir + "/pristine";
  std::filesystem::copy(broken, pristine, std::filesystem::copy_options::recursive);
  for (int ms = 0; ms <= 450; ms += 50) {
    SCOPED_TRACE("resume killed after " + std::to_string(ms) + " ms");
    const auto run = dir + "/kill_" + std::to_string(ms);
    std::filesystem::copy(pristine, run, std::filesystem::copy_options::recursive);
    const pid_t pid = spawn_train(manifest, run, true, log);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    ::kill(pid, SIGKILL);
    wait_exit(pid);
    const auto st = sdpo::inspect_run_folder(run, 4);
    ASSERT_TRUE(st.problem.empty()) << st.problem;
    ASSERT_GE(st.epochs_logged, 2);
    ASSERT_EQ(wait_exit(spawn_train(manifest, run, true, log)), 0) << sdpo::test::read_text(log);
    sdpo::test::expect_same_run(straight, run, 4);
  }
}

}  // namespace

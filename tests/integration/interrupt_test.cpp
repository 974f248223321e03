// SIGINT and SIGTERM during `sdpo train` (sdpo/train/interrupt.h): the run stops between batches
// with its run file flushed, says how to resume, exits 130 or 143, and `--resume` continues it; a
// second signal exits at once.
#include "sdpo/train/interrupt.h"

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

#include "sdpo/train/run_file.h"
#include "sdpo/train/run_folder.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

struct Started {
  pid_t pid;
  std::string log;
};

// `sdpo train` of the micro manifest for many epochs, output to `log`.
Started start_train(const std::string& dir) {
  const auto manifest = dir + "/micro.json";
  std::ofstream(manifest) << sdpo::test::micro_algorithm_manifest("sdpo");
  Started s{-1, dir + "/log.txt"};
  s.pid = ::fork();
  if (s.pid == 0) {
    const int fd = ::open(s.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    const std::string out = dir + "/run";
    ::execl(
        SDPO_CLI, SDPO_CLI, "train", manifest.c_str(), "--output", out.c_str(), "--set", "train.epochs=500", "--set",
        "eval.every=0", "--set", "train.checkpoint_every=1", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return s;
}

// Waits (at most 120 s) for the first checkpoint: the run is under way.
bool wait_for_checkpoint(const std::string& run) {
  for (int i = 0; i < 1200; ++i) {
    if (sdpo::last_checkpoint_epoch(run) >= 1) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

int wait_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class Interrupt : public ::testing::TestWithParam<int> {};

TEST_P(Interrupt, StopsBetweenBatchesSaysHowToResumeAndResumes) {
  const int sig = GetParam();
  const auto dir = sdpo::test::temp_dir("interrupt");
  auto s = start_train(dir);
  ASSERT_TRUE(wait_for_checkpoint(dir + "/run")) << sdpo::test::read_text(s.log);
  ::kill(s.pid, sig);
  EXPECT_EQ(wait_status(s.pid), 128 + sig) << sdpo::test::read_text(s.log);
  const auto log = sdpo::test::read_text(s.log);
  EXPECT_NE(log.find(sig == SIGINT ? "interrupted by SIGINT" : "interrupted by SIGTERM"), std::string::npos) << log;
  EXPECT_NE(log.find("resume with --resume --output " + dir + "/run"), std::string::npos) << log;
  // The run file is whole and the folder resumes (to one more epoch, to keep the test short).
  const auto rows = sdpo::RunFile::open(dir + "/run/run.h5", false).rows("train");
  EXPECT_GE(rows, 1);
  const auto last = sdpo::last_checkpoint_epoch(dir + "/run");
  auto r = sdpo::test::run_command(
      std::string(SDPO_CLI) + " train " + dir + "/micro.json --output " + dir +
      "/run --resume --set eval.every=0 --set train.checkpoint_every=1 --set train.epochs=" + std::to_string(last + 1));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(sdpo::RunFile::open(dir + "/run/run.h5", false).rows("train"), last + 1);
}

INSTANTIATE_TEST_SUITE_P(Signals, Interrupt, ::testing::Values(SIGINT, SIGTERM));

// In a child process (deterministic: a signal to oneself is delivered before raise() returns):
// the first SIGINT only sets the flag, the second exits 130 at once with its message.
TEST(Interrupt, ASecondSignalExitsAtOnce) {
  const auto log = sdpo::test::temp_dir("interrupt_twice") + "/log.txt";
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, STDERR_FILENO);
    sdpo::install_interrupt_handlers();
    ::raise(SIGINT);
    if (sdpo::interrupt_signal() != SIGINT) ::_exit(3);
    ::raise(SIGINT);
    ::_exit(4);  // not reached
  }
  EXPECT_EQ(wait_status(pid), 130);
  EXPECT_NE(sdpo::test::read_text(log).find("second signal: exiting now"), std::string::npos)
      << sdpo::test::read_text(log);
}

TEST(Interrupt, CheckInterruptThrowsWithTheExitStatus) {
  sdpo::clear_interrupt();
  EXPECT_NO_THROW(sdpo::check_interrupt());
  const pid_t pid = ::fork();
  if (pid == 0) {
    sdpo::install_interrupt_handlers();
    ::raise(SIGTERM);
    try {
      sdpo::check_interrupt();
    } catch (const sdpo::Interrupted& e) {
      ::_exit(e.exit_status() == 143 && std::string(e.what()) == "interrupted by SIGTERM" ? 0 : 5);
    }
    ::_exit(6);
  }
  EXPECT_EQ(wait_status(pid), 0);
}

}  // namespace

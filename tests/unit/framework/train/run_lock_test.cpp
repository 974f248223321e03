// Run folders are owned (sdpo/train/run_lock.h, TrainerOptions::overwrite): a second writer is
// refused naming the holder's pid, a killed holder leaves no stale lock, a folder that holds a
// run is refused without --resume or --overwrite, and an empty --output is an error.
#include "sdpo/train/run_lock.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "sdpo/core/error.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

TEST(RunFolderLock, ASecondLockIsRefusedNamingTheHolderAndReleasedOnScopeExit) {
  const auto dir = sdpo::test::temp_dir("run_lock") + "/run";  // created by the lock
  {
    sdpo::RunFolderLock first(dir);
    EXPECT_EQ(sdpo::test::read_text(sdpo::RunFolderLock::lock_path(dir)), std::to_string(::getpid()) + "\n");
    sdpo::test::expect_error_names(
        [&] { sdpo::RunFolderLock second(dir); },
        {"run folder " + dir, "is being written by process " + std::to_string(::getpid()), ".sdpo.lock",
         "another --output"});
  }
  EXPECT_EQ(sdpo::test::read_text(sdpo::RunFolderLock::lock_path(dir)), "");  // released: empty, still there
  EXPECT_NO_THROW(sdpo::RunFolderLock again(dir));
}

TEST(RunFolderLock, AKilledHolderLeavesNoStaleLock) {
  const auto dir = sdpo::test::temp_dir("run_lock_kill");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    try {
      sdpo::RunFolderLock held(dir);
      const char ok = 1;
      if (::write(ready[1], &ok, 1) != 1) ::_exit(2);
      ::pause();  // until killed
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  ::close(ready[1]);
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ::close(ready[0]);
  sdpo::test::expect_error_names([&] { sdpo::RunFolderLock mine(dir); }, {"process " + std::to_string(child)});
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  // The lock file still holds the dead pid, but the kernel dropped the lock with the process.
  EXPECT_EQ(sdpo::test::read_text(sdpo::RunFolderLock::lock_path(dir)), std::to_string(child) + "\n");
  EXPECT_NO_THROW(sdpo::RunFolderLock mine(dir));
}

sdpo::Manifest one_epoch() {
  return sdpo::Manifest::parse(
      sdpo::test::micro_algorithm_manifest("sdpo"), "micro_sdpo.json", {"train.epochs=1", "eval.every=0"});
}

TEST(RunFolderOwnership, AFolderHoldingARunIsRefusedWithoutResumeOrOverwrite) {
  const auto dir = sdpo::test::temp_dir("run_owned");
  sdpo::Trainer(one_epoch(), {dir}).run();
  sdpo::test::expect_error_names(
      [&] { sdpo::Trainer(one_epoch(), {dir}).run(); },
      {dir, "already holds a run", "run.h5", "a checkpoint at epoch 1", "--resume", "--overwrite"});
  // The refused run touched nothing.
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/epoch_1"));
  EXPECT_EQ(sdpo::RunFile::open(dir + "/run.h5", false).rows("train"), 1);

  sdpo::TrainerOptions o(dir);
  o.overwrite = true;
  sdpo::Trainer(one_epoch(), o).run();
  EXPECT_EQ(sdpo::RunFile::open(dir + "/run.h5", false).rows("train"), 1);

  // A folder another writer holds is refused even with --overwrite.
  sdpo::RunFolderLock other(dir);
  sdpo::test::expect_error_names(
      [&] { sdpo::Trainer(one_epoch(), o).run(); }, {"is being written by process " + std::to_string(::getpid())});
}

TEST(RunFolderOwnership, TheCliRefusesAnEmptyOutputAndAnOwnedFolder) {
  const auto dir = sdpo::test::temp_dir("run_owned_cli");
  const auto file = dir + "/micro.json";
  std::ofstream(file) << sdpo::test::micro_algorithm_manifest("sdpo");
  const std::string train = std::string(SDPO_CLI) + " train " + file + " --set train.epochs=1 --set eval.every=0 ";
  auto empty = sdpo::test::run_command(train + "--output '' 2>&1");
  EXPECT_EQ(empty.status, 1) << empty.output;
  EXPECT_NE(empty.output.find("--output must name a path, got an empty string"), std::string::npos) << empty.output;
  ASSERT_EQ(sdpo::test::run_command(train + "--output " + dir + "/run 2>&1").status, 0);
  auto again = sdpo::test::run_command(train + "--output " + dir + "/run 2>&1");
  EXPECT_EQ(again.status, 1) << again.output;
  EXPECT_NE(again.output.find("already holds a run"), std::string::npos) << again.output;
  auto replaced = sdpo::test::run_command(train + "--output " + dir + "/run --overwrite 2>&1");
  EXPECT_EQ(replaced.status, 0) << replaced.output;
}

}  // namespace

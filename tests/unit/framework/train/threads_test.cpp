// The thread-count rule of every command (sdpo/train/threads.h): --threads, SDPO_THREADS,
// OMP_NUM_THREADS, then the hardware; OpenBLAS one thread unless OPENBLAS_NUM_THREADS is set.
#include "sdpo/train/threads.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "sdpo/core/error.h"

namespace {

sdpo::ThreadEnvironment env(std::string sdpo, std::string omp, std::string blas, unsigned hw) {
  sdpo::ThreadEnvironment e;
  e.sdpo_threads = std::move(sdpo);
  e.omp_num_threads = std::move(omp);
  e.openblas_num_threads = std::move(blas);
  e.hardware_threads = hw;
  return e;
}

TEST(Threads, DefaultIsEveryHardwareThreadWithOneBlasThread) {
  const auto s = sdpo::resolve_threads(0, env("", "", "", 16));
  EXPECT_EQ(s.intra_op, 16);
  EXPECT_EQ(s.blas, 1);
  EXPECT_EQ(s.source, "hardware");
  // hardware_concurrency() may answer 0 ("not computable"): one thread then.
  EXPECT_EQ(sdpo::resolve_threads(0, env("", "", "", 0)).intra_op, 1);
}

TEST(Threads, OptionBeatsSdpoThreadsBeatsOmpNumThreads) {
  auto s = sdpo::resolve_threads(3, env("5", "7", "", 16));
  EXPECT_EQ(s.intra_op, 3);
  EXPECT_EQ(s.source, "--threads");
  s = sdpo::resolve_threads(0, env("5", "7", "", 16));
  EXPECT_EQ(s.intra_op, 5);
  EXPECT_EQ(s.source, "SDPO_THREADS");
  s = sdpo::resolve_threads(0, env("", "7", "", 16));
  EXPECT_EQ(s.intra_op, 7);
  EXPECT_EQ(s.source, "OMP_NUM_THREADS");
  // OpenMP's nested form: the first level is libtorch's.
  EXPECT_EQ(sdpo::resolve_threads(0, env("", "4,2", "", 16)).intra_op, 4);
}

TEST(Threads, OpenblasNumThreadsLeavesOpenblasAlone) {
  EXPECT_EQ(sdpo::resolve_threads(0, env("", "", "4", 16)).blas, 0);
  EXPECT_EQ(sdpo::resolve_threads(2, env("", "", "", 16)).blas, 1);
}

TEST(Threads, BadCountsNameWhereTheyCameFrom) {
  for (const char* bad : {"0", "-2", "two", "2x", "", "5000"}) {
    try {
      sdpo::parse_thread_count(bad, "--threads");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const sdpo::Error& e) {
      EXPECT_NE(std::string(e.what()).find("--threads: expected a thread count"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(sdpo::parse_thread_count("4096", "--threads"), 4096);
  try {
    sdpo::resolve_threads(0, env("many", "", "", 2));
    ADD_FAILURE() << "accepted SDPO_THREADS=many";
  } catch (const sdpo::Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("SDPO_THREADS: expected a thread count, a whole number in 1..4096, got 'many'"),
        std::string::npos)
        << e.what();
  }
  EXPECT_THROW(sdpo::resolve_threads(0, env("", "0", "", 2)), sdpo::Error);
}

TEST(Threads, ApplySetsTheIntraOpCount) {
  const int before = sdpo::intra_op_threads();
  sdpo::ThreadSettings s;
  s.intra_op = 2;
  s.blas = 1;
  sdpo::apply_threads(s);
  EXPECT_EQ(sdpo::intra_op_threads(), 2);
  EXPECT_EQ(at::get_num_threads(), 2);
  s.intra_op = before;
  sdpo::apply_threads(s);
  EXPECT_EQ(sdpo::intra_op_threads(), before);
}

}  // namespace

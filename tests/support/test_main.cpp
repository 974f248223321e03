#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "support/test_support.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // ctest runs tests in parallel (one process each): one intra-op thread per process avoids
  // oversubscribing the cores (on a 16-core machine, 8 processes x 16 threads timed out).
  at::set_num_threads(1);
  // The same for the `sdpo` processes the CLI tests start (sdpo/train/threads.h), unless the caller chose.
  ::setenv("SDPO_THREADS", "1", /*overwrite=*/0);
  sdpo::test::load_plugins_once();
  const int result = RUN_ALL_TESTS();
  // A passing run leaves no /tmp/sdpo_test_* folders behind; a failing one keeps them.
  if (result == 0) sdpo::test::remove_temp_dirs();
  return result;
}

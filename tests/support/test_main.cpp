#include <gtest/gtest.h>

#include "support/test_support.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  sdpo::test::load_plugins_once();
  return RUN_ALL_TESTS();
}

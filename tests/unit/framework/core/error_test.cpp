// sdpo::error_message (sdpo/core/error.h): what a user reads when libtorch or the allocator
// throws: one line without libtorch's C++ backtrace (unless SDPO_DEBUG=1), out-of-memory named
// as such with what to lower.
#include "sdpo/core/error.h"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <new>
#include <string>

namespace {

c10::Error torch_error(const std::string& msg) {
  return c10::Error(msg, "frame #0: c10::detail::torchCheckFail(...)\nframe #1: at::native::empty_cpu(...)\n");
}

TEST(ErrorMessage, TorchErrorsLoseTheirBacktraceUnlessSdpoDebugIsSet) {
  ::unsetenv("SDPO_DEBUG");
  const auto e = torch_error("Expected all tensors to be on the same device");
  EXPECT_EQ(sdpo::error_message(e), "Expected all tensors to be on the same device");
  ::setenv("SDPO_DEBUG", "1", 1);
  EXPECT_NE(sdpo::error_message(e).find("frame #1: at::native::empty_cpu"), std::string::npos);
  ::unsetenv("SDPO_DEBUG");
}

TEST(ErrorMessage, OutOfMemoryIsNamedWithWhatToLower) {
  ::unsetenv("SDPO_DEBUG");
  const auto cpu = sdpo::error_message(
      torch_error("DefaultCPUAllocator: not enough memory: you tried to allocate 51539607552 bytes."));
  EXPECT_EQ(cpu.rfind("out of memory: DefaultCPUAllocator: not enough memory", 0), 0u) << cpu;
  EXPECT_NE(cpu.find("train.batch_size"), std::string::npos) << cpu;
  EXPECT_EQ(cpu.find('\n'), std::string::npos) << cpu;
  const auto host = sdpo::error_message(std::bad_alloc());
  EXPECT_EQ(host.rfind("out of memory (std::bad_alloc)", 0), 0u) << host;
  EXPECT_NE(host.find("sample.forward_batch"), std::string::npos) << host;
}

TEST(ErrorMessage, OtherExceptionsAreTheirWhat) {
  EXPECT_EQ(sdpo::error_message(sdpo::Error("plain")), "plain");
  EXPECT_EQ(sdpo::error_message(std::runtime_error("runtime")), "runtime");
}

}  // namespace

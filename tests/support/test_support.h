#pragma once
// Shared test helpers: tensor comparison, the golden vectors, temporary folders, plugins.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <boost/json/value.hpp>
#include <functional>
#include <string>
#include <vector>

namespace sdpo::test {

/// What a shell command printed (stdout and stderr together) and its exit status.
struct CommandResult {
  int status = -1;
  std::string output;
};

/// Runs `command` through the shell (popen) with stderr merged into stdout, to its end.
CommandResult run_command(const std::string& command);

/// Loads the build's plugins into Registry::global() (once per process).
void load_plugins_once();

/// The golden reference vectors (tests/data/sdpo_reference_vectors.json).
const boost::json::value& golden();
/// A nested JSON array of numbers as a float64 tensor.
at::Tensor json_tensor(const boost::json::value& v);

/// The micro world shared by the end-to-end tests: 8x8 images, a UNet of a few thousand
/// parameters, 4-step trajectories, 2 epochs of 2 sampling batches of 2 prompts, evaluation at 1
/// and 2 steps on 2 prompts. Arguments are the JSON values of their sections. The fixture plugins'
/// NaN reward is on the plugin path.
std::string micro_manifest(const std::string& reward, const std::string& normalizer, const std::string& algorithm);

/// micro_manifest with colorfulness and, for `algorithm` "ddpo", DDPO (IS) with a per-prompt
/// normalizer (buffer 4, min count 2); for any other, that algorithm with its default options and
/// a per-step-prompt normalizer (the same buffer).
std::string micro_algorithm_manifest(const std::string& algorithm);

/// A fresh empty directory under the system temp folder, unique per call. The test binary
/// removes them all when every test it ran passed (a failure keeps them to look at).
std::string temp_dir(const std::string& tag);

/// The whole file as text ("" when it cannot be read).
std::string read_text(const std::string& path);

/// Removes every folder temp_dir() made in this process (test_main.cpp, after a passing run).
void remove_temp_dirs();

/// Expects `f` to throw an sdpo::Error whose message contains every one of `parts`.
void expect_error_names(const std::function<void()>& f, const std::vector<std::string>& parts);

/// Expects every element of `a` close to `b` (|a-b| <= atol + rtol*|b|), shapes equal.
void expect_close(const at::Tensor& a, const at::Tensor& b, double rtol, double atol, const std::string& what = "");

}  // namespace sdpo::test

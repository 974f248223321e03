#include "support/test_support.h"

#include <sys/wait.h>

#include <array>
#include <atomic>
#include <boost/json/parse.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"
#include "sdpo/core/plugin.h"

namespace sdpo::test {

CommandResult run_command(const std::string& command) {
  const std::string cmd = command + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  CommandResult r;
  std::array<char, 4096> buf{};
  while (pipe && fgets(buf.data(), static_cast<int>(buf.size()), pipe.get())) r.output += buf.data();
  const int status = pclose(pipe.release());
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return r;
}

void load_plugins_once() {
  static std::once_flag once;
  std::call_once(once, [] { PluginLoader(Registry::global()).load_directory(SDPO_TEST_PLUGIN_DIR); });
}

const boost::json::value& golden() {
  static const boost::json::value v = json_parse_file(SDPO_GOLDEN_FILE);
  return v;
}

at::Tensor json_tensor(const boost::json::value& v) {
  if (v.is_array()) {
    std::vector<at::Tensor> rows;
    for (const auto& e : v.as_array()) rows.push_back(json_tensor(e));
    if (rows.empty()) return at::empty({0}, at::kDouble);
    return at::stack(rows);
  }
  return at::scalar_tensor(v.to_number<double>(), at::kDouble);
}

std::string micro_manifest(const std::string& reward, const std::string& normalizer, const std::string& algorithm) {
  return R"({
    "name": "micro",
    "model": {"name": "toy_unet", "options": {"image_size": 8, "channels": [8, 8], "cond_dim": 8, "heads": 1, "norm_groups": 4}},
    "text_encoder": {"name": "toy_text", "options": {"dim": 8, "layers": 1, "heads": 1}},
    "decoder": "identity",
    "sampler": {"name": "ddim"},
    "prompts": {"name": "shapes", "options": {"image_size": 8}},
    "reward": )" +
         reward + R"(,
    "dense_reward": {"name": "similarity_3_adaptive"},
    "normalizer": )" +
         normalizer + R"(,
    "algorithm": )" +
         algorithm + R"(,
    "train": {"epochs": 2, "batch_size": 2, "batches_per_epoch": 2, "train_batch_size": 2, "learning_rate": 0.001},
    "sample": {"steps": 4},
    "eval": {"steps": [1, 2], "seeds": 1, "max_prompts": 2},
    "output": {"progress": false, "grid_prompts": 2},
    "plugin_paths": [")" +
         std::string(SDPO_TEST_FIXTURE_DIR) + R"(/fixture_nan_reward.so"]
  })";
}

std::string micro_algorithm_manifest(const std::string& algorithm) {
  if (algorithm == "ddpo") {
    return micro_manifest(
        R"({"name": "colorfulness"})", R"({"name": "per_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
        R"({"name": "ddpo", "options": {"estimator": "is"}})");
  }
  return micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
      R"({"name": ")" + algorithm + R"("})");
}

namespace {
std::mutex& temp_dirs_mutex() {
  static std::mutex m;
  return m;
}
std::vector<std::string>& temp_dirs() {
  static std::vector<std::string> dirs;
  return dirs;
}
}  // namespace

std::string temp_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  namespace fs = std::filesystem;
  auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
  fs::path p =
      fs::temp_directory_path() / ("sdpo_test_" + tag + "_" + std::to_string(stamp) + "_" + std::to_string(counter++));
  fs::create_directories(p);
  std::lock_guard<std::mutex> lock(temp_dirs_mutex());
  temp_dirs().push_back(p.string());
  return p.string();
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void remove_temp_dirs() {
  std::lock_guard<std::mutex> lock(temp_dirs_mutex());
  for (const auto& d : temp_dirs()) {
    std::error_code ec;
    std::filesystem::remove_all(d, ec);  // a tmpfs still mounted there (full_disk_test) stays
  }
  temp_dirs().clear();
}

void expect_error_names(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an sdpo::Error";
  } catch (const Error& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

void expect_close(const at::Tensor& a, const at::Tensor& b, double rtol, double atol, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  auto ad = a.detach().to(at::kDouble).cpu();
  auto bd = b.detach().to(at::kDouble).cpu();
  auto err = (ad - bd).abs();
  auto tol = atol + rtol * bd.abs();
  auto bad = (err > tol);
  if (bad.any().item<bool>()) {
    auto idx = bad.flatten().nonzero()[0].item<int64_t>();
    FAIL() << what << ": element " << idx << " got " << ad.flatten()[idx].item<double>() << " expected "
           << bd.flatten()[idx].item<double>();
  }
}

}  // namespace sdpo::test

// The `reward_server` reward against its reference server (rewards/reward_server/example_server.py,
// run with Debian's /usr/bin/python3 and numpy): scores equal the server's formula recomputed
// here, batching does not change them, each misbehaviour of the server (--fail) gives its
// documented error, the retry-once path, no child process left behind, and a 1-epoch micro run.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <signal.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

const char* const kPython = "/usr/bin/python3";
const std::string kServer = std::string(SDPO_SOURCE_DIR) + "/rewards/reward_server/example_server.py";

// Why the tests cannot run here, or "" when /usr/bin/python3 with numpy is present.
const std::string& python_missing() {
  static const std::string why = [] {
    if (::access(kPython, X_OK) != 0) return std::string("/usr/bin/python3 is not installed (scripts/setup.sh)");
    if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
      return std::string("/usr/bin/python3 has no numpy (python3-numpy, scripts/setup.sh)");
    }
    return std::string();
  }();
  return why;
}

#define SKIP_WITHOUT_PYTHON()                                        \
  do {                                                               \
    if (!python_missing().empty()) GTEST_SKIP() << python_missing(); \
  } while (0)

json::array server_command(const std::vector<std::string>& args = {}) {
  json::array c{kPython, kServer};
  for (const auto& a : args) c.emplace_back(json::string(a));
  return c;
}

std::shared_ptr<sdpo::Reward> make_reward(json::object options) {
  return sdpo::Registry::global().create<sdpo::Reward>(
      sdpo::ComponentConfig{"reward", "reward_server", std::move(options), "<test>", "reward.options"});
}

std::shared_ptr<sdpo::Reward> make_server_reward(const std::vector<std::string>& args, json::object options = {}) {
  options["command"] = server_command(args);
  return make_reward(std::move(options));
}

// The example server's score on the images the protocol sends: mean HSV saturation of the levels
// round(clamp(x, 0, 1) * 255).
at::Tensor mean_saturation(const at::Tensor& images) {
  const at::Tensor q = images.to(at::kFloat).clamp(0.0, 1.0).mul(255.0).round().to(at::kDouble);
  const at::Tensor hi = std::get<0>(q.max(1)), lo = std::get<0>(q.min(1));
  const at::Tensor s = at::where(hi > 0, (hi - lo) / hi.clamp_min(1.0), at::zeros_like(hi));
  return s.mean({1, 2});
}

at::Tensor test_images(int64_t n, int64_t size, uint64_t seed) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor x = at::rand({n, 3, size, size}, g);
  if (n >= 3) {
    x[0].fill_(0.5);  // gray: 0
    x[1].zero_();     // black: 0 (max is 0)
    x[2].zero_();
    x[2][0].fill_(1.0);  // pure red: 1
  }
  return x;
}

// Lines "<pid> <id> <count>" the server appends per request received (--log).
struct LoggedRequest {
  long pid, id, count;
};
std::vector<LoggedRequest> read_log(const std::string& path) {
  std::vector<LoggedRequest> out;
  std::ifstream f(path);
  LoggedRequest r{};
  while (f >> r.pid >> r.id >> r.count) out.push_back(r);
  return out;
}

// Children of this process (any state, zombies included), from /proc.
std::vector<pid_t> child_processes() {
  std::vector<pid_t> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    long ppid = 0;
    if (rest >> state >> ppid && ppid == ::getpid()) out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

bool process_gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

// Runs `f`, expects an sdpo::Error whose message contains every one of `parts`; returns it.
template <class F>
std::string expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const sdpo::Error& e) {
    const std::string what = e.what();
    for (const auto& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "missing '" << p << "' in: " << what;
    return what;
  }
  ADD_FAILURE() << "no sdpo::Error thrown; expected one with '" << (parts.empty() ? "" : parts[0]) << "'";
  return "";
}

TEST(RewardServer, ScoresEqualTheServersFormulaOnQuantizedImages) {
  SKIP_WITHOUT_PYTHON();
  auto reward = make_server_reward({});
  EXPECT_FALSE(reward->needs_prompts());
  // 96x96: one request of 6 images is 166 KB, more than a pipe holds, so writes wait for room.
  const at::Tensor images = test_images(6, 96, 1);
  const at::Tensor s = reward->score(images, {});
  ASSERT_EQ(s.sizes(), (at::IntArrayRef{6}));
  EXPECT_EQ(s.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(s).all().item<bool>());
  sdpo::test::expect_close(s, mean_saturation(images), 0, 1e-6, "mean HSV saturation");
  EXPECT_EQ(s[0].item<float>(), 0.0f) << "gray";
  EXPECT_EQ(s[1].item<float>(), 0.0f) << "black";
  EXPECT_EQ(s[2].item<float>(), 1.0f) << "pure red";
  // Values outside [0, 1] are clamped before quantization.
  sdpo::test::expect_close(reward->score(images * 3 - 1, {}), mean_saturation(images * 3 - 1), 0, 1e-6, "clamped");
  EXPECT_EQ(reward->score(images.slice(0, 0, 0), {}).numel(), 0) << "an empty batch";
}

TEST(RewardServer, BatchedScoresEqualOneByOne) {
  SKIP_WITHOUT_PYTHON();
  const std::string log = sdpo::test::temp_dir("reward_server_batch") + "/requests.log";
  auto batched = make_server_reward({"--log", log}, {{"batch_size", 3}});
  auto single = make_server_reward({}, {{"batch_size", 1}});
  const at::Tensor images = test_images(7, 16, 2);
  const at::Tensor s = batched->score(images, {});
  EXPECT_TRUE(at::isfinite(s).all().item<bool>());
  sdpo::test::expect_close(single->score(images, {}), s, 0, 0, "batch_size 1");
  for (int64_t i = 0; i < 7; ++i) {
    sdpo::test::expect_close(batched->score(images.slice(0, i, i + 1), {}), s.slice(0, i, i + 1), 0, 0, "one image");
  }
  // 7 images in requests of at most 3, then the 7 single images; ids count up from 1.
  const auto requests = read_log(log);
  ASSERT_EQ(requests.size(), 10u);
  const std::vector<long> counts{3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(requests[i].count, counts[i]) << i;
    EXPECT_EQ(requests[i].id, static_cast<long>(i + 1));
  }
}

TEST(RewardServer, PromptsReachAServerThatNeedsThem) {
  SKIP_WITHOUT_PYTHON();
  auto reward = make_server_reward({"--needs-prompts"});
  EXPECT_TRUE(reward->needs_prompts()) << "from the handshake";
  const at::Tensor images = test_images(3, 8, 3);
  // The server adds 0.001 x the prompt's length in code points; quotes, a newline and non-ASCII
  // text must arrive intact.
  const std::vector<std::string> prompts{"a red circle", "say \"hi\"\nthen\\leave", "caf\xc3\xa9 \xe2\x9c\x93"};
  const at::Tensor bonus = at::tensor(std::vector<double>{12, 19, 6}, at::kDouble) * 0.001;
  sdpo::test::expect_close(reward->score(images, prompts), mean_saturation(images) + bonus, 0, 1e-6, "prompts");
  expect_error([&] { reward->score(images, {"one prompt"}); }, {"needs prompts", "got 1 prompts for 3 images"});
}

struct BadAnswer {
  const char* mode;
  std::vector<std::string> message;
  bool numeric;  ///< thrown as sdpo::NumericError
};

TEST(RewardServer, EachBadAnswerGivesItsDocumentedErrorAndIsNotRetried) {
  SKIP_WITHOUT_PYTHON();
  const std::vector<BadAnswer> cases{
      {"wrong_count", {"request 1: wrong count: the answer has 3 scores for 4 images; not retried"}, false},
      {"nan", {"request 1: score 0 is NaN", "scores must be finite); not retried"}, true},
      {"wrong_id", {"request 1: wrong id: the answer has id 2, the request had id 1; not retried"}, false},
      {"non_number", {"request 1: score 0 is not a number: \"high\"; not retried"}, false},
      // The server's bytes are escaped, never echoed raw to the terminal.
      {"garbage", {"request 1: malformed answer (not JSON: ", "'this is not json \\x1b[31m\\xff'; not retried"}, false},
      {"error", {"request 1: the server reported an error: simulated failure (not retried)"}, false},
  };
  const at::Tensor images = test_images(4, 8, 4);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.mode);
    const std::string dir = sdpo::test::temp_dir("reward_server_bad");
    // --fail-once: were the request retried, the second server would answer well and nothing throw.
    auto reward = make_server_reward({"--fail", c.mode, "--fail-once", dir + "/failed", "--log", dir + "/log"});
    std::vector<std::string> parts = c.message;
    parts.push_back("reward 'reward_server' (command: /usr/bin/python3 " + kServer + " --fail " + c.mode);
    bool numeric = false;
    expect_error(
        [&] {
          try {
            reward->score(images, {});
          } catch (const sdpo::NumericError&) {
            numeric = true;
            throw;
          }
        },
        parts);
    EXPECT_EQ(numeric, c.numeric);
    EXPECT_EQ(read_log(dir + "/log").size(), 1u) << "sent once";
    // The server is stopped after a bad answer (kept after a reported error); either way the
    // next call is answered, by the same or a fresh server that now behaves.
    sdpo::test::expect_close(reward->score(images, {}), mean_saturation(images), 0, 1e-6, "next call");
  }
}

TEST(RewardServer, ATimeoutIsRetriedOnceThenFails) {
  SKIP_WITHOUT_PYTHON();
  const std::string dir = sdpo::test::temp_dir("reward_server_timeout");
  auto reward = make_server_reward({"--fail", "sleep", "--log", dir + "/log"}, {{"timeout_seconds", 1.0}});
  const at::Tensor images = test_images(2, 8, 5);
  expect_error(
      [&] { reward->score(images, {}); },
      {"request 2 (the retry of request 1): no answer within 1 s (timeout_seconds); the server was killed; "
       "giving up after one retry (request 1: no answer within 1 s"});
  const auto requests = read_log(dir + "/log");
  ASSERT_EQ(requests.size(), 2u) << "the request and exactly one retry";
  EXPECT_NE(requests[0].pid, requests[1].pid) << "the retry went to a restarted server";
  for (const auto& r : requests) EXPECT_TRUE(process_gone(static_cast<pid_t>(r.pid))) << "killed and reaped";

  // A server that sleeps only once: the retry is answered.
  auto once = make_server_reward({"--fail", "sleep", "--fail-once", dir + "/slept"}, {{"timeout_seconds", 1.0}});
  sdpo::test::expect_close(once->score(images, {}), mean_saturation(images), 0, 1e-6, "after one timeout");
}

TEST(RewardServer, ACrashIsRetriedOnceAndReportsTheExitStatus) {
  SKIP_WITHOUT_PYTHON();
  const std::string dir = sdpo::test::temp_dir("reward_server_crash");
  const at::Tensor images = test_images(3, 8, 6);

  auto always = make_server_reward({"--fail", "crash", "--log", dir + "/always.log"});
  expect_error(
      [&] { always->score(images, {}); },
      {"request 2 (the retry of request 1): the server exited with status 3 before answering; giving up "
       "after one retry (request 1: the server exited with status 3 before answering)"});
  ASSERT_EQ(read_log(dir + "/always.log").size(), 2u) << "the request and exactly one retry";

  // A server that exits while the plugin is still writing a request larger than a pipe holds
  // (221 KB): the write gets EPIPE, and the SIGPIPE it raises must not kill this process.
  auto early = make_server_reward({"--fail", "crash_early"}, {{"batch_size", 8}});
  expect_error(
      [&] { early->score(test_images(8, 96, 8), {}); },
      {"the server exited with status 4 while receiving the request; giving up after one retry"});

  auto killed = make_server_reward({"--fail", "signal"});
  expect_error(
      [&] { killed->score(images, {}); }, {"the server was killed by signal 9 (", "giving up after one retry"});

  // A server that crashes on its first request only: the retry on a fresh server succeeds.
  auto once = make_server_reward({"--fail", "crash", "--fail-once", dir + "/crashed", "--log", dir + "/once.log"});
  sdpo::test::expect_close(once->score(images, {}), mean_saturation(images), 0, 1e-6, "after one crash");
  const auto requests = read_log(dir + "/once.log");
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_NE(requests[0].pid, requests[1].pid);
  EXPECT_EQ(requests[1].id, 2) << "the retry has the next id";
  // Later requests go to the restarted server.
  once->score(images, {});
  EXPECT_EQ(read_log(dir + "/once.log").back().pid, requests[1].pid);
}

TEST(RewardServer, AProtocolVersionMismatchIsRefused) {
  SKIP_WITHOUT_PYTHON();
  expect_error(
      [&] {
        make_server_reward({"--fail", "bad_version"});
      },
      {"reward 'reward_server' (command: /usr/bin/python3 " + kServer +
       " --fail bad_version): protocol "
       "mismatch: the server speaks 'sdpo-reward' version 2, this plugin speaks 'sdpo-reward' version 1"});
}

TEST(RewardServer, StartupFailuresAndOptionsAreReported) {
  SKIP_WITHOUT_PYTHON();
  expect_error(
      [&] {
        make_reward({{"command", json::array{"/nonexistent/reward_server"}}});
      },
      {"reward 'reward_server' (command: /nonexistent/reward_server): cannot start the server: posix_spawnp "
       "'/nonexistent/reward_server': No such file or directory"});
  expect_error(
      [&] {
        make_reward({{"command", json::array{kPython, "-c", "import sys; sys.exit(5)"}}});
      },
      {"-c 'import sys; sys.exit(5)'): the server exited with status 5 before its handshake"});
  expect_error(
      [&] {
        make_reward({{"command", json::array{kPython, "-c", "print('hello')"}}});
      },
      {"its first line is not a JSON handshake object: 'hello'"});
  expect_error(
      [&] {
        make_reward(
            {{"command", json::array{kPython, "-c", "import time; time.sleep(60)"}}, {"startup_timeout_seconds", 0.5}});
      },
      {"no handshake line within 0.5 s (startup_timeout_seconds); the server was killed"});
  EXPECT_THROW(make_reward({}), sdpo::ManifestError);
  expect_error([&] { make_reward({{"command", json::array{}}}); }, {"<test>: reward.options.command: "});
  EXPECT_THROW(make_reward({{"command", "python3 server.py"}}), sdpo::ManifestError) << "argv, not a shell line";
  EXPECT_THROW(make_server_reward({}, {{"batch_size", 0}}), sdpo::ManifestError);
  EXPECT_THROW(make_server_reward({}, {{"timeout_seconds", 0}}), sdpo::ManifestError);

  auto reward = make_server_reward({});
  expect_error([&] { reward->score(at::zeros({2, 8, 8}), {}); }, {"expected images (B, 3, H, W), got sizes (2, 8, 8)"});
  EXPECT_THROW(reward->score(at::full({1, 3, 4, 4}, NAN), {}), sdpo::NumericError);
}

// The server runs in its own process group, and stopping it kills the group: what the server
// started goes with it.
TEST(RewardServer, TheServersOwnChildrenAreStoppedWithIt) {
  SKIP_WITHOUT_PYTHON();
  const std::string dir = sdpo::test::temp_dir("reward_server_grandchild");
  pid_t grandchild = 0;
  {
    auto reward = make_server_reward({"--spawn-child", dir + "/child.pid"});
    reward->score(test_images(2, 8, 3), {});
    std::ifstream(dir + "/child.pid") >> grandchild;
    ASSERT_GT(grandchild, 0);
    EXPECT_FALSE(process_gone(grandchild));
    const auto children = child_processes();
    ASSERT_EQ(children.size(), 1u);
    EXPECT_EQ(::getpgid(children[0]), children[0]) << "the server leads its own process group";
    EXPECT_EQ(::getpgid(grandchild), children[0]);
  }
  // Killed with the group; reaped by init (it is not our child), so poll briefly for its exit.
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    std::ifstream stat("/proc/" + std::to_string(grandchild) + "/stat");
    std::string s((std::istreambuf_iterator<char>(stat)), {});
    gone = s.empty() || s.find(") Z") != std::string::npos;
    if (!gone) ::usleep(10000);
  }
  EXPECT_TRUE(gone) << "the server's child " << grandchild << " outlived it";
}

TEST(RewardServer, NoChildProcessIsLeftBehind) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_TRUE(child_processes().empty()) << "a previous test left a child";
  const std::string dir = sdpo::test::temp_dir("reward_server_children");
  const at::Tensor images = test_images(2, 8, 7);
  {
    auto reward = make_server_reward({"--fail", "crash", "--fail-once", dir + "/crashed", "--log", dir + "/log"});
    reward->score(images, {});
    const auto children = child_processes();
    ASSERT_EQ(children.size(), 1u) << "the crashed server was reaped, its replacement runs";
    const auto requests = read_log(dir + "/log");
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_TRUE(process_gone(static_cast<pid_t>(requests[0].pid))) << "the crashed server";
    EXPECT_EQ(children[0], static_cast<pid_t>(requests[1].pid));
  }
  EXPECT_TRUE(child_processes().empty()) << "the destructor stops and reaps the server";
  EXPECT_TRUE(process_gone(static_cast<pid_t>(read_log(dir + "/log").back().pid)));
  {
    // Servers that timed out are killed and reaped at once, not left for the destructor.
    auto reward = make_server_reward({"--fail", "sleep"}, {{"timeout_seconds", 0.2}});
    EXPECT_THROW(reward->score(images, {}), sdpo::Error);
    EXPECT_TRUE(child_processes().empty()) << "both timed-out servers were killed and reaped";
    auto again = make_server_reward({});
    EXPECT_EQ(child_processes().size(), 1u);
  }
  EXPECT_TRUE(child_processes().empty());
}

TEST(RewardServer, RunsInAMicroTrainingRun) {
  SKIP_WITHOUT_PYTHON();
  const std::string dir = sdpo::test::temp_dir("reward_server_micro");
  json::object reward{{"name", "reward_server"}, {"options", json::object{{"command", server_command()}}}};
  const std::string text = sdpo::test::micro_manifest(
      json::serialize(reward), R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
      R"({"name": "sdpo"})");
  auto m = sdpo::Manifest::parse(text, "micro_reward_server.json", {"train.epochs=1"});
  sdpo::Trainer(m, {dir}).run();

  auto file = sdpo::RunFile::open(dir + "/run.h5");
  ASSERT_EQ(file.rows("train"), 1);
  for (double l : file.read_curve("train", "loss")) EXPECT_TRUE(std::isfinite(l));
  for (double r : file.read_curve("train", "reward_last_mean")) EXPECT_TRUE(r >= 0 && r <= 1) << r;
  for (double r : file.read_curve("eval/steps_1", "reward_mean")) EXPECT_TRUE(r >= 0 && r <= 1) << r;
  EXPECT_EQ(file.read_curve("train", "reward_queries"), (std::vector<double>{24})) << "3 queries x 8 trajectories";
  EXPECT_TRUE(child_processes().empty()) << "the trainer's reward stopped its server";
}

}  // namespace

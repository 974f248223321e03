// Measuring without asserting speed (issue 8): the counting model decorator counts forwards and
// backwards exactly and its replay (the bare loop of `sdpo bench`) makes the same calls; the
// trainer logs device_seconds, devices and the phase times per epoch; `sdpo bench` prints every
// phase and both overhead ratios. No test here compares one time with another.
#include "sdpo/commands/bench.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>

#include "sdpo/commands/counting_model.h"
#include "sdpo/core/model.h"
#include "sdpo/train/clocks.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/trainer.h"
#include "support/test_support.h"

namespace {

// out = x_t * w, one trainable scalar.
class ScaleModel final : public sdpo::Model {
 public:
  ScaleModel() : w_(at::ones({1}).requires_grad_(true)) {}
  at::Tensor forward(const at::Tensor& x_t, const at::Tensor&, const at::Tensor&) override { return x_t * w_; }
  std::string prediction_type() const override { return "epsilon"; }
  std::vector<std::int64_t> latent_shape() const override { return {1, 2, 2}; }
  std::vector<at::Tensor> trainable_parameters() override { return {w_}; }
  sdpo::TensorMap state_dict() const override { return {{"w", w_}}; }
  sdpo::TensorMap trainable_state_dict() const override { return {{"w", w_}}; }
  void load_state_dict(const sdpo::TensorMap&, bool, const std::string&) override {}
  void set_training(bool) override {}
  void to(c10::Device) override {}
  at::Tensor w_;
};

std::string micro_sdpo() {
  return sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_step_prompt", "options": {"buffer_size": 4, "min_count": 2}})",
      R"({"name": "sdpo"})");
}

TEST(CountingModel, CountsForwardsAndBackwardsExactly) {
  auto inner = std::make_shared<ScaleModel>();
  auto log = std::make_shared<sdpo::ModelCallLog>();
  sdpo::CountingModel model(inner, log);
  const auto t = at::zeros({3}, at::kLong), cond = at::zeros({3, 1, 1});
  {
    at::NoGradGuard no_grad;
    model.forward(at::ones({2, 1, 2, 2}), t.narrow(0, 0, 2), cond.narrow(0, 0, 2));  // no grad: no backward
  }
  model.forward(at::ones({3, 1, 2, 2}), t, cond).sum().backward();                 // one backward
  model.forward(at::ones({1, 1, 2, 2}), t.narrow(0, 0, 1), cond.narrow(0, 0, 1));  // grad on, output dropped
  auto a = model.forward(at::ones({2, 1, 2, 2}), t.narrow(0, 0, 2), cond.narrow(0, 0, 2));
  auto b = model.forward(at::ones({2, 1, 2, 2}), t.narrow(0, 0, 2), cond.narrow(0, 0, 2));
  (a + b).sum().backward();  // one backward through each

  EXPECT_EQ(log->forwards(), 5);
  EXPECT_EQ(log->backwards(), 3);
  const std::vector<std::int64_t> batches{2, 3, 1, 2, 2}, backwards{0, 1, 0, 1, 1};
  const std::vector<bool> grad{false, true, true, true, true};
  ASSERT_EQ(log->calls.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(log->calls[i].batch, batches[i]) << i;
    EXPECT_EQ(log->calls[i].grad, grad[i]) << i;
    EXPECT_EQ(log->calls[i].backwards, backwards[i]) << i;
  }
  ASSERT_TRUE(log->x_t.defined());
  EXPECT_EQ(log->x_t.size(0), 3) << "the inputs of the largest call are kept";

  // The bare loop makes the same calls: replayed through a second counter, the logs agree.
  auto replay_log = std::make_shared<sdpo::ModelCallLog>();
  sdpo::CountingModel recount(inner, replay_log);
  const double seconds = sdpo::replay_model_calls(recount, *log, log->calls, c10::Device("cpu"));
  EXPECT_GE(seconds, 0.0);
  ASSERT_EQ(replay_log->calls.size(), log->calls.size());
  for (std::size_t i = 0; i < log->calls.size(); ++i) {
    EXPECT_EQ(replay_log->calls[i].batch, log->calls[i].batch) << i;
    EXPECT_EQ(replay_log->calls[i].grad, log->calls[i].grad) << i;
    EXPECT_EQ(replay_log->calls[i].backwards, log->calls[i].backwards) << i;
  }
  EXPECT_FALSE(inner->w_.grad().defined()) << "the replay leaves no gradient behind";
}

TEST(Clocks, ProcessCpuTimeAdvancesWithWork) {
  sdpo::DeviceClock clock(c10::Device("cpu"), 5.0);
  const double before = clock.seconds();
  EXPECT_GE(before, 5.0);
  volatile double x = 0;
  const double start = sdpo::process_cpu_seconds();
  while (sdpo::process_cpu_seconds() - start < 0.02) x = x + 1;  // burn 20 ms of CPU
  EXPECT_GT(clock.seconds(), before);
}

TEST(BenchCurves, DeviceSecondsAndPhaseTimesAreLogged) {
  auto dir = sdpo::test::temp_dir("bench_curves");
  auto m = sdpo::Manifest::parse(micro_sdpo(), "micro.json", {"train.epochs=3"});
  std::vector<sdpo::EpochTimes> times;
  sdpo::TrainerOptions o(dir);
  o.on_epoch_times = [&](const sdpo::EpochTimes& t) { times.push_back(t); };
  const auto run_start = std::chrono::steady_clock::now();
  sdpo::Trainer(m, o).run();
  const double run_wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  ASSERT_EQ(times.size(), 3u);

  auto file = sdpo::RunFile::open(dir + "/run.h5", false);
  const auto device = file.read_curve("train", "device_seconds");
  const auto wall = file.read_curve("train", "wall_seconds");
  ASSERT_EQ(device.size(), 3u);
  EXPECT_GT(device[0], 0.0);
  for (std::size_t e = 1; e < device.size(); ++e) EXPECT_GT(device[e], device[e - 1]) << "epoch " << e + 1;
  EXPECT_EQ(file.read_curve("train", "devices"), (std::vector<double>{1, 1, 1}));
  EXPECT_EQ(file.read_curve("eval/steps_1", "devices").size(), 4u);

  const char* phases[] = {"time_sampling", "time_decode", "time_reward", "time_prepare", "time_update"};
  std::vector<double> sum(3, 0.0);
  for (const char* p : phases) {
    const auto c = file.read_curve("train", p);
    ASSERT_EQ(c.size(), 3u) << p;
    for (std::size_t e = 0; e < 3; ++e) {
      EXPECT_GE(c[e], 0.0) << p;
      sum[e] += c[e];
    }
  }
  // The phases lie inside their epoch and the epochs inside the run. (Not inside the wall time
  // between two rows: a row's clock is read before the epoch's last writes, so under load an
  // epoch can outlast the interval between its row and the previous one.)
  double epochs = 0.0;
  for (std::size_t e = 0; e < 3; ++e) {
    EXPECT_GT(file.read_curve("train", "time_sampling")[e], 0.0);
    EXPECT_GT(file.read_curve("train", "time_update")[e], 0.0);
    EXPECT_LE(sum[e], times[e].epoch) << "epoch " << e + 1;
    EXPECT_DOUBLE_EQ(file.read_curve("train", "time_update")[e], times[e].update);
    epochs += times[e].epoch;
  }
  EXPECT_LE(epochs, run_wall);
  EXPECT_LE(wall.back(), run_wall);
}

TEST(Bench, RunBenchCountsTheEpochsModelCalls) {
  auto m = sdpo::Manifest::parse(micro_sdpo(), "micro.json");
  sdpo::BenchOptions o;
  o.epochs = 2;
  const auto r = sdpo::run_bench(m, o);
  EXPECT_EQ(r.epochs, 2);
  // Sampling: 2 epochs x 2 batches x 4 steps, without grad; every grad forward gets a backward.
  EXPECT_EQ(r.forwards - r.grad_forwards, 2 * 2 * 4);
  EXPECT_GT(r.grad_forwards, 0);
  EXPECT_EQ(r.backwards, r.grad_forwards);
  EXPECT_GT(r.bare_no_grad_seconds, 0.0);
  EXPECT_GT(r.bare_grad_seconds, 0.0);
  EXPECT_EQ(r.bare_seconds, r.bare_no_grad_seconds + r.bare_grad_seconds) << "the two parts of the bare loop";
  EXPECT_GT(r.times.epoch, 0.0);
  EXPECT_GT(r.device_seconds, 0.0);
  const auto text = sdpo::format_bench_report(r);
  EXPECT_NE(text.find("2 timed epochs after 1 warm-up"), std::string::npos) << text;
}

TEST(Bench, CliPrintsEveryPhaseAndTheRatios) {
  auto dir = sdpo::test::temp_dir("bench_cli");
  const std::string manifest = dir + "/micro.json";
  std::ofstream(manifest) << micro_sdpo();
  const std::string cmd =
      std::string(SDPO_CLI) + " bench " + manifest + " --epochs 1 --set train.batches_per_epoch=1 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 4096> buf{};
  while (pipe && fgets(buf.data(), buf.size(), pipe.get())) out += buf.data();
  const int status = pclose(pipe.release());
  ASSERT_EQ(WEXITSTATUS(status), 0) << out;
  for (const char* line :
       {"sampling", "decoding", "reward", "preparation", "update", "epoch total",
        "model calls: 8 forwards (4 with grad), 4 backwards", "bare libtorch loop", "no-grad forwards",
        "overhead ratio (epoch / bare loop):", "overhead ratio without decoding and reward", "device_seconds:"}) {
    EXPECT_NE(out.find(line), std::string::npos) << line << "\n" << out;
  }
  const auto bad = std::string(SDPO_CLI) + " bench " + manifest + " --epochs 0 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> p2(popen(bad.c_str(), "r"), pclose);
  std::string err;
  while (p2 && fgets(buf.data(), buf.size(), p2.get())) err += buf.data();
  EXPECT_EQ(WEXITSTATUS(pclose(p2.release())), 1);
  EXPECT_NE(err.find("--epochs must be at least 1"), std::string::npos) << err;
}

}  // namespace

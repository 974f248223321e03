// Data parallel through c10d (sdpo/distributed/distributed.h, docs/distributed.md) on the CPU with Gloo:
//   - the collectives of the wrapper, two ranks in two threads of this process;
//   - `sdpo launch --nproc 2`: after one epoch the trainable weights (and the normalizer state) equal
//     those of one process that trained on the union of both ranks' samples (TrainerOptions::
//     sampling_ranks reproduces rank 1's random stream in one process), for an unpaired (DDPO) and
//     a paired (SDPO) algorithm;
//   - a resumed two-rank run matches an unbroken one exactly;
//   - a rank that dies makes the other stop with an error naming it, and the launch fail;
//   - a rank that never starts is named by the others' rendezvous after the timeout.
#include "sdpo/distributed/distributed.h"

#include <ATen/ATen.h>
#include <sys/wait.h>

#include <array>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <memory>
#include <thread>

#include "sdpo/core/error.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/distributed/launch.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/run_folder.h"
#include "sdpo/train/trainer.h"
#include "support/run_compare.h"
#include "support/test_support.h"

namespace {

struct Result {
  int status;
  std::string output;
  double seconds;
};

// `env` (VAR=value ...) and the sdpo CLI with `args`, stdout and stderr together.
Result run_cli(const std::string& env, const std::string& args) {
  const auto start = std::chrono::steady_clock::now();
  std::string cmd = "env OPENBLAS_NUM_THREADS=1 " + env + " " + std::string(SDPO_CLI) + " " + args + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 4096> buf{};
  while (pipe && fgets(buf.data(), buf.size(), pipe.get())) out += buf.data();
  int status = pclose(pipe.release());
  return {WEXITSTATUS(status), out, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// One epoch of one sampling batch of 2 prompts (2 pairs for SDPO) per rank, trained in one
// mini-batch and one optimizer update (DDPO's accumulation over the trained steps; SDPO's
// step_accumulated schedule), so that a mean over the union equals the mean of the ranks' means.
std::string manifest_text(const std::string& algorithm) {
  if (algorithm == "ddpo") {
    return sdpo::test::micro_manifest(
        R"({"name": "colorfulness"})", R"({"name": "per_prompt", "options": {"buffer_size": 8, "min_count": 2}})",
        R"({"name": "ddpo", "options": {"estimator": "is"}})");
  }
  return sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_step_prompt", "options": {"buffer_size": 8, "min_count": 2}})",
      R"({"name": "sdpo", "options": {"update": "step_accumulated"}})");
}

const std::vector<std::string> kOneEpoch{"train.epochs=1", "train.batches_per_epoch=1", "train.batch_size=2"};

std::string write_manifest(const std::string& dir, const std::string& algorithm) {
  const std::string path = dir + "/micro_" + algorithm + ".json";
  std::ofstream(path) << manifest_text(algorithm);
  return path;
}

std::string set_args(const std::vector<std::string>& sets) {
  std::string s;
  for (const auto& x : sets) s += " --set " + x;
  return s;
}

TEST(Distributed, OneProcessWithoutEnvironmentHasNoGroup) {
  if (std::getenv("WORLD_SIZE") != nullptr) GTEST_SKIP() << "WORLD_SIZE is set in the test environment";
  EXPECT_EQ(sdpo::DistributedOptions::from_env(c10::Device("cpu")).world_size, 1);
  EXPECT_EQ(sdpo::Distributed::from_env(c10::Device("cpu")), nullptr);
  EXPECT_EQ(sdpo::rank_seed(42, 0), 42u);  // rank 0 draws exactly what one process draws
  EXPECT_NE(sdpo::rank_seed(42, 1), sdpo::rank_seed(43, 0));
}

TEST(Distributed, CollectivesOfTwoRanksInTwoThreads) {
  const int port = sdpo::free_tcp_port();
  struct Out {
    std::vector<at::Tensor> gathered;
    std::vector<at::Tensor> grads;
    at::Tensor broadcast;
    std::exception_ptr error;
  };
  std::array<Out, 2> out;
  auto rank_main = [&](int rank) {
    try {
      sdpo::DistributedOptions o;
      o.rank = rank;
      o.world_size = 2;
      o.local_rank = rank;
      o.master_port = port;
      o.timeout = std::chrono::seconds(20);
      sdpo::Distributed d(o);
      EXPECT_EQ(d.rank(), rank);
      EXPECT_EQ(d.backend(), "gloo");
      // Varying first dim: rank 0 sends 1 row, rank 1 sends 3.
      auto mine = at::arange(2 * (1 + 2 * rank), at::kFloat).view({-1, 2}) + 100 * rank;
      out[rank].gathered = d.all_gather(mine, "rows");
      // Three parameters, the last without a gradient on rank 0; 16-byte buckets force several.
      std::vector<at::Tensor> params{at::zeros({3}), at::zeros({2, 2}), at::zeros({1})};
      params[0].mutable_grad() = at::full({3}, 1.0f + rank);
      params[1].mutable_grad() = at::full({2, 2}, 10.0f * (rank + 1));
      if (rank == 1) params[2].mutable_grad() = at::full({1}, 4.0f);
      d.all_reduce_gradients(params, 16);
      for (auto& p : params) out[rank].grads.push_back(p.grad().clone());
      auto b = at::full({2}, static_cast<float>(rank + 7));
      d.broadcast(b, 1, "value");
      out[rank].broadcast = b;
      d.barrier("end");
    } catch (...) {
      out[rank].error = std::current_exception();
    }
  };
  std::thread t0(rank_main, 0), t1(rank_main, 1);
  t0.join();
  t1.join();
  for (int r = 0; r < 2; ++r) {
    if (out[r].error) std::rethrow_exception(out[r].error);
    ASSERT_EQ(out[r].gathered.size(), 2u);
    EXPECT_TRUE(out[r].gathered[0].equal(at::arange(2, at::kFloat).view({1, 2})));
    EXPECT_TRUE(out[r].gathered[1].equal(at::arange(6, at::kFloat).view({3, 2}) + 100));
    EXPECT_TRUE(out[r].grads[0].equal(at::full({3}, 1.5f)));
    EXPECT_TRUE(out[r].grads[1].equal(at::full({2, 2}, 15.0f)));
    EXPECT_TRUE(out[r].grads[2].equal(at::full({1}, 2.0f)));
    EXPECT_TRUE(out[r].broadcast.equal(at::full({2}, 8.0f)));
  }
}

class DistributedEquivalence : public ::testing::TestWithParam<std::string> {};

TEST_P(DistributedEquivalence, TwoProcessesUpdateLikeOneProcessOnTheUnionOfTheirBatches) {
  const std::string algorithm = GetParam();
  const auto dir = sdpo::test::temp_dir("distributed_" + algorithm);
  const auto manifest = write_manifest(dir, algorithm);

  // Two ranks, each with its own stream: 2 prompts (or pairs) each, one mini-batch of 2.
  const auto two = dir + "/two";
  auto r = run_cli("", "launch --nproc 2 --timeout 60 " + manifest + " --output " + two + set_args(kOneEpoch));
  ASSERT_EQ(r.status, 0) << r.output;
  std::cerr << "[          ] sdpo launch --nproc 2 (" << algorithm << "): " << r.seconds << " s\n";
  EXPECT_TRUE(contains(r.output, "sdpo launch: all 2 ranks finished")) << r.output;

  // One process sampling both ranks' batches, one mini-batch of 4.
  auto sets = kOneEpoch;
  sets.push_back("train.train_batch_size=4");
  const auto m = sdpo::Manifest::parse(manifest_text(algorithm), manifest, sets);
  const auto one = dir + "/union";
  sdpo::TrainerOptions o(one);
  o.sampling_ranks = 2;
  sdpo::Trainer(m, o).run();
  // And an ordinary one-process run (rank 0's batch only), which must not pass for either.
  const auto alone = dir + "/alone";
  sdpo::Trainer(sdpo::Manifest::parse(manifest_text(algorithm), manifest, kOneEpoch), {alone}).run();

  const auto weights_two = sdpo::safetensors_load(sdpo::checkpoint_dir(two, 1) + "/model.safetensors");
  const auto weights_one = sdpo::safetensors_load(sdpo::checkpoint_dir(one, 1) + "/model.safetensors");
  const auto weights_alone = sdpo::safetensors_load(sdpo::checkpoint_dir(alone, 1) + "/model.safetensors");
  ASSERT_EQ(weights_two.size(), weights_one.size());
  double differs_from_alone = 0;
  for (const auto& [k, v] : weights_one) {
    ASSERT_TRUE(weights_two.count(k)) << k;
    sdpo::test::expect_close(weights_two.at(k), v, 1e-4, 1e-6, k);
    differs_from_alone = std::max(differs_from_alone, (weights_alone.at(k) - v).abs().max().item<double>());
  }
  EXPECT_GT(differs_from_alone, 1e-5) << "the union's update should differ from rank 0's alone";

  // The normalizer saw the same gathered returns, in the same order, on both.
  sdpo::StringMap meta_two, meta_one;
  sdpo::safetensors_load(sdpo::checkpoint_dir(two, 1) + "/trainer.safetensors", &meta_two);
  sdpo::safetensors_load(sdpo::checkpoint_dir(one, 1) + "/trainer.safetensors", &meta_one);
  EXPECT_EQ(
      boost::json::parse(meta_two.at("state")).at("normalizer"),
      boost::json::parse(meta_one.at("state")).at("normalizer"));

  // The run file (rank 0's): two devices, both ranks' samples, the union's rewards.
  auto f2 = sdpo::RunFile::open(two + "/run.h5", false), f1 = sdpo::RunFile::open(one + "/run.h5", false);
  EXPECT_EQ(f2.read_curve("train", "devices"), (std::vector<double>{2.0}));
  EXPECT_EQ(f2.read_curve("train", "samples"), f1.read_curve("train", "samples"));
  EXPECT_EQ(f2.read_curve("train", "reward_last_mean"), f1.read_curve("train", "reward_last_mean"));
  EXPECT_EQ(f2.read_curve("train", "samples"), (std::vector<double>{algorithm == "ddpo" ? 4.0 : 8.0}));
}

INSTANTIATE_TEST_SUITE_P(Algorithms, DistributedEquivalence, ::testing::Values("ddpo", "sdpo"));

// Checkpoints hold every rank's random stream: a two-rank run stopped after epoch 1 and resumed
// ends bit for bit like one that never stopped.
TEST(Distributed, AResumedTwoRankRunMatchesAnUnbrokenOne) {
  const auto dir = sdpo::test::temp_dir("distributed_resume");
  const auto manifest = write_manifest(dir, "sdpo");
  const std::string launch = "launch --nproc 2 --timeout 60 " + manifest;
  const std::string sets = " --set train.batches_per_epoch=1 --set train.epochs=";
  auto r = run_cli("", launch + " --output " + dir + "/straight" + sets + "2");
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli("", launch + " --output " + dir + "/broken" + sets + "1");
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli("", launch + " --output " + dir + "/broken --resume" + sets + "2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "from its checkpoint at epoch 1 of 2")) << r.output;
  sdpo::test::expect_same_run(dir + "/straight", dir + "/broken", 2);
}

TEST(Distributed, ADeadRankIsNamedByTheOthersAndFailsTheLaunch) {
  const auto dir = sdpo::test::temp_dir("distributed_dead");
  const auto manifest = write_manifest(dir, "ddpo");
  // Rank 1 dies (like a crash: no cleanup, no report) as soon as the group is up. The grace is
  // long, so rank 0's error below can only come from rank 0 stopping on its own.
  auto r = run_cli(
      "SDPO_DIST_TEST_EXIT_RANK=1",
      "launch --nproc 2 --timeout 30 --grace 60 " + manifest + " --output " + dir + "/run" + set_args(kOneEpoch));
  std::cerr << "[          ] dead rank: the launch returned after " << r.seconds << " s\n";
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_TRUE(contains(r.output, "sdpo launch: rank 1 failed (exit status 3)")) << r.output;
  EXPECT_TRUE(contains(r.output, "[rank 0] sdpo train: error:")) << r.output;
  EXPECT_TRUE(contains(r.output, "rank 0 of 2: broadcast")) << r.output;
  EXPECT_TRUE(contains(r.output, "rank 1 stopped")) << r.output;
}

TEST(Distributed, ARankThatNeverStartsIsNamedAfterTheTimeout) {
  const auto dir = sdpo::test::temp_dir("distributed_missing");
  const auto manifest = write_manifest(dir, "ddpo");
  const std::string env =
      "WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(sdpo::free_tcp_port()) +
      " SDPO_DIST_TIMEOUT=1.5";
  auto r = run_cli(env, "train " + manifest + " --output " + dir + "/run" + set_args(kOneEpoch));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "rank 0 of 2: rendezvous: rank 1 did not join within 1.5 s")) << r.output;
}

TEST(Distributed, MalformedEnvironmentIsRefused) {
  const auto dir = sdpo::test::temp_dir("distributed_env");
  const auto manifest = write_manifest(dir, "ddpo");
  auto r = run_cli("WORLD_SIZE=2 RANK=5", "train " + manifest + " --output " + dir + "/run");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "RANK must be in [0, WORLD_SIZE)")) << r.output;
  r = run_cli("", "launch " + manifest);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--nproc N")) << r.output;
  // Far more ranks than cores, or than any machine's process table: refused before any start.
  r = run_cli("", "launch --nproc 100000 " + manifest);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--nproc 100000 is more than")) << r.output;
  EXPECT_TRUE(contains(r.output, "--oversubscribe")) << r.output;
  r = run_cli("", "launch --oversubscribe --nproc 5000 " + manifest);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "is more than 4096 (the limit)")) << r.output;
  r = run_cli("", "launch --nproc 2.5 " + manifest);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_FALSE(contains(r.output, "ranks, MASTER_ADDR")) << r.output;
}

}  // namespace

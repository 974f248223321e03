// train.update_schedule (sdpo/train/manifest.h): "epoch" samples every batch of an epoch, then updates
// once on the whole buffer; "per_batch" (RLCM's loop, research/algorithms.md 5.4) samples,
// normalizes and updates one batch at a time. Micro runs check that
//   - at one batch per epoch the two schedules give the same run, bit for bit;
//   - at two batches per_batch runs the algorithm's update once per batch, each on that batch's
//     rows only, with the epoch's counters unchanged;
//   - a per_batch run stopped after an epoch and resumed matches one that never stopped;
//   - two data-parallel ranks under per_batch update like one process on the union of their
//     batches, batch by batch;
//   - an unknown schedule is a ManifestError naming train.update_schedule.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sdpo/commands/counting_model.h"
#include "sdpo/core/error.h"
#include "sdpo/core/safetensors.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/run_folder.h"
#include "sdpo/train/trainer.h"
#include "support/run_compare.h"
#include "support/test_support.h"

namespace {

// The micro world (test_support.h: 2 epochs of 2 batches of 2 prompts, T = 4) for SDPO (dense
// rewards, paired) or DDPO (final-image reward, unpaired).
sdpo::Manifest manifest(const std::string& algorithm, const std::vector<std::string>& sets) {
  return sdpo::Manifest::parse(sdpo::test::micro_algorithm_manifest(algorithm), "micro_" + algorithm + ".json", sets);
}

std::vector<std::string> with(std::vector<std::string> sets, const std::string& schedule) {
  sets.push_back("train.update_schedule=" + schedule);
  return sets;
}

class UpdateScheduleOneBatchMicroRun : public ::testing::TestWithParam<std::string> {};

TEST_P(UpdateScheduleOneBatchMicroRun, PerBatchIsTheEpochScheduleBitForBit) {
  const std::vector<std::string> one_batch{"train.batches_per_epoch=1", "train.batch_size=3"};
  const auto epoch = sdpo::test::temp_dir("schedule_epoch"), per_batch = sdpo::test::temp_dir("schedule_per_batch");
  sdpo::Trainer(manifest(GetParam(), one_batch), {epoch}).run();
  sdpo::Trainer(manifest(GetParam(), with(one_batch, "per_batch")), {per_batch}).run();
  sdpo::test::expect_same_run(epoch, per_batch, 2);
}

INSTANTIATE_TEST_SUITE_P(Algorithms, UpdateScheduleOneBatchMicroRun, ::testing::Values("sdpo", "ddpo"));

// Every forward of the run, through sdpo/commands/counting_model.h: the algorithm's are the ones in grad
// mode (sampling and evaluation run under no_grad).
struct CountedRun {
  std::vector<sdpo::ModelCall> training_calls;
  std::string dir;
};

CountedRun counted_run(const sdpo::Manifest& m, const std::string& tag) {
  auto log = std::make_shared<sdpo::ModelCallLog>();
  sdpo::TrainerOptions o(sdpo::test::temp_dir(tag));
  o.wrap_model = [log](std::shared_ptr<sdpo::Model> inner) -> std::shared_ptr<sdpo::Model> {
    return std::make_shared<sdpo::CountingModel>(std::move(inner), log);
  };
  sdpo::Trainer t(m, o);
  t.run();
  CountedRun r{{}, t.run_dir()};
  for (const auto& call : log->calls) {
    if (call.grad) r.training_calls.push_back(call);
  }
  return r;
}

TEST(UpdateScheduleMicroRun, PerBatchUpdatesOnceForEachBatchOnThatBatchsRows) {
  // SDPO's default schedule (7.5): one backward per (position, mini-batch), one optimizer step
  // per mini-batch (G_acc 1), each backward one forward of the mini-batch's a and b rows. With
  // micro-batches of 4 pairs, the epoch schedule trains its 2 x 2 pairs as one mini-batch (8
  // rows, T = 4 updates per epoch); per_batch trains each batch's 2 pairs alone (4 rows, 2T).
  const std::vector<std::string> sets{"train.train_batch_size=4", "train.gradient_accumulation=1"};
  const auto epoch = counted_run(manifest("sdpo", sets), "schedule_counted_epoch");
  const auto per_batch = counted_run(manifest("sdpo", with(sets, "per_batch")), "schedule_counted_per_batch");

  const std::int64_t epochs = 2, batches = 2, T = 4, rows_per_batch = 2 * 2;
  ASSERT_EQ(epoch.training_calls.size(), static_cast<std::size_t>(epochs * T));
  for (const auto& call : epoch.training_calls) EXPECT_EQ(call.batch, batches * rows_per_batch);
  ASSERT_EQ(per_batch.training_calls.size(), static_cast<std::size_t>(epochs * batches * T));
  for (const auto& call : per_batch.training_calls) EXPECT_EQ(call.batch, rows_per_batch);

  auto fe = sdpo::RunFile::open(epoch.dir + "/run.h5", false),
       fp = sdpo::RunFile::open(per_batch.dir + "/run.h5", false);
  // `updates` is the optimizer's running count, after the epoch's last batch.
  EXPECT_EQ(fe.read_curve("train", "updates"), (std::vector<double>{4, 8}));
  EXPECT_EQ(fp.read_curve("train", "updates"), (std::vector<double>{8, 16}));
  // The same images, queries and trajectory length per epoch under either schedule.
  for (const char* counter : {"samples", "reward_queries", "reward_queries_per_trajectory", "trajectory_steps"}) {
    EXPECT_EQ(fp.read_curve("train", counter), fe.read_curve("train", counter)) << counter;
  }
  EXPECT_EQ(fp.read_curve("train", "samples"), (std::vector<double>{8, 16}));
  for (double loss : fp.read_curve("train", "loss")) EXPECT_TRUE(std::isfinite(loss));
  // The second batch was sampled after an update: the weights part ways.
  const auto we = sdpo::safetensors_load(sdpo::checkpoint_dir(epoch.dir, 2) + "/model.safetensors");
  const auto wp = sdpo::safetensors_load(sdpo::checkpoint_dir(per_batch.dir, 2) + "/model.safetensors");
  double differs = 0;
  for (const auto& [k, v] : we) differs = std::max(differs, (wp.at(k) - v).abs().max().item<double>());
  EXPECT_GT(differs, 1e-6);
}

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted by the test") {}
};

TEST(UpdateScheduleResume, APerBatchRunStoppedAfterEpochTwoAndResumedMatchesAnUnbrokenRun) {
  // The normalizer's state advances batch by batch inside an epoch; checkpoints are at epoch
  // ends, so a resume continues it exactly.
  const auto m = manifest("sdpo", with({"train.epochs=4", "train.checkpoint_every=1"}, "per_batch"));
  const auto straight = sdpo::test::temp_dir("schedule_straight"), broken = sdpo::test::temp_dir("schedule_broken");
  sdpo::Trainer(m, {straight}).run();

  sdpo::TrainerOptions stop(broken);
  stop.on_epoch = [](const sdpo::TrainingCounters& c) {
    if (c.epoch == 2) throw Interrupted();
  };
  EXPECT_THROW(sdpo::Trainer(m, stop).run(), sdpo::Error);
  ASSERT_EQ(sdpo::last_checkpoint_epoch(broken), 2);
  sdpo::TrainerOptions resume(broken);
  resume.resume = true;
  sdpo::Trainer t(m, resume);
  t.run();
  EXPECT_EQ(t.resumed_from(), 2);
  sdpo::test::expect_same_run(straight, broken, 4);
}

// `sdpo launch` with `args`, stdout and stderr together; the exit status.
std::pair<int, std::string> run_cli(const std::string& args) {
  const auto r = sdpo::test::run_command("env OPENBLAS_NUM_THREADS=1 " + std::string(SDPO_CLI) + " " + args);
  return {r.status, r.output};
}

TEST(UpdateScheduleDistributed, TwoRanksUpdateBatchByBatchLikeOneProcessOnTheUnionOfTheirBatches) {
  // SDPO without shuffles (stepwise_ordered, shuffle_batch false) draws nothing in its update, so
  // each rank's stream serves only its sampling, as the simulated ranks' streams do
  // (TrainerOptions::sampling_ranks): rank r's second batch is then the simulated rank r's second
  // batch up to the float rounding of the first update, and every update of 2 ranks (2 pairs
  // each) is that of one process on the union (4 pairs).
  const std::string algorithm =
      R"({"name": "sdpo", "options": {"update": "stepwise_ordered", "shuffle_batch": false}})";
  const std::string text = sdpo::test::micro_manifest(
      R"({"name": "colorfulness"})", R"({"name": "per_step_prompt", "options": {"buffer_size": 8, "min_count": 2}})",
      algorithm);
  const auto dir = sdpo::test::temp_dir("schedule_distributed");
  const std::string path = dir + "/micro.json";
  std::ofstream(path) << text;
  const std::vector<std::string> sets{"train.epochs=1", "train.update_schedule=per_batch"};

  std::string args = "launch --nproc 2 --timeout 60 " + path + " --output " + dir + "/two";
  for (const auto& s : sets) args += " --set " + s;
  const auto [status, output] = run_cli(args);
  ASSERT_EQ(status, 0) << output;

  auto union_run = [&](const std::string& name, const std::string& schedule) {
    sdpo::TrainerOptions o(dir + "/" + name);
    o.sampling_ranks = 2;
    sdpo::Trainer(
        sdpo::Manifest::parse(
            text, path, {"train.epochs=1", "train.train_batch_size=4", "train.update_schedule=" + schedule}),
        o)
        .run();
    return sdpo::safetensors_load(sdpo::checkpoint_dir(dir + "/" + name, 1) + "/model.safetensors");
  };
  const auto two = sdpo::safetensors_load(sdpo::checkpoint_dir(dir + "/two", 1) + "/model.safetensors");
  const auto one = union_run("union_per_batch", "per_batch");
  // The epoch schedule on the same union (one update per position over both batches) must not pass.
  const auto epoch = union_run("union_epoch", "epoch");
  ASSERT_EQ(two.size(), one.size());
  double differs_from_epoch = 0;
  for (const auto& [k, v] : one) {
    ASSERT_TRUE(two.count(k)) << k;
    sdpo::test::expect_close(two.at(k), v, 1e-4, 1e-6, k);
    differs_from_epoch = std::max(differs_from_epoch, (epoch.at(k) - v).abs().max().item<double>());
  }
  EXPECT_GT(differs_from_epoch, 1e-5) << "per_batch's updates should differ from the epoch schedule's";

  auto f2 = sdpo::RunFile::open(dir + "/two/run.h5", false),
       f1 = sdpo::RunFile::open(dir + "/union_per_batch/run.h5", false);
  EXPECT_EQ(f2.read_curve("train", "samples"), (std::vector<double>{16}));  // 2 ranks x 2 batches x 2 pairs x 2
  EXPECT_EQ(f2.read_curve("train", "samples"), f1.read_curve("train", "samples"));
  EXPECT_EQ(f2.read_curve("train", "reward_queries"), f1.read_curve("train", "reward_queries"));
  EXPECT_EQ(f2.read_curve("train", "updates"), (std::vector<double>{8}));  // 2 batches x T
  EXPECT_EQ(f2.read_curve("train", "updates"), f1.read_curve("train", "updates"));
  EXPECT_NEAR(f2.read_curve("train", "reward_last_mean").at(0), f1.read_curve("train", "reward_last_mean").at(0), 1e-5);
}

TEST(UpdateScheduleManifest, DefaultsToEpochAndRefusesAnUnknownSchedule) {
  EXPECT_EQ(manifest("sdpo", {}).train.update_schedule, "epoch");
  EXPECT_EQ(manifest("sdpo", {"train.update_schedule=per_batch"}).train.update_schedule, "per_batch");
  try {
    manifest("sdpo", {"train.update_schedule=per_step"});
    FAIL() << "expected a ManifestError";
  } catch (const sdpo::ManifestError& e) {
    EXPECT_EQ(e.json_path(), "train.update_schedule");
    const std::string what = e.what();
    EXPECT_NE(what.find("micro_sdpo.json"), std::string::npos) << what;
    EXPECT_NE(what.find("{epoch, per_batch}"), std::string::npos) << what;
    EXPECT_NE(what.find("'per_step'"), std::string::npos) << what;
  }
}

}  // namespace

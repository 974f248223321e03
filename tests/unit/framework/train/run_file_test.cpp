#include "sdpo/train/run_file.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "sdpo/core/error.h"
#include "support/test_support.h"

namespace {

namespace fs = std::filesystem;

const std::map<std::string, std::string> kAttributes{
    {"manifest", R"({"train": {"epochs": 2}})"},
    {"framework_version", "0.1.0"},
    {"torch_version", "1.13.1"},
    {"device", "cpu"},
    {"started_at", "2024-01-01T00:00:00Z"},
    {"note", "caf\xc3\xa9"},  // UTF-8
};

// Expects `a` and `b` equal element-wise, NaN matching NaN.
void expect_curve(const std::vector<double>& a, const std::vector<double>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(b[i])) {
      EXPECT_TRUE(std::isnan(a[i])) << what << "[" << i << "] = " << a[i];
    } else {
      EXPECT_EQ(a[i], b[i]) << what << "[" << i << "]";
    }
  }
}

TEST(RunFile, CreateWritesAttributes) {
  const std::string path = sdpo::test::temp_dir("h5") + "/runs/q/run.h5";
  auto f = sdpo::RunFile::create(path, kAttributes);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.attribute("schema_version"), "1");
  for (const auto& [k, v] : kAttributes) EXPECT_EQ(f.attribute(k), v) << k;
  try {
    f.attribute("git_commit");
    ADD_FAILURE() << "expected a FileError";
  } catch (const sdpo::FileError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("git_commit"), std::string::npos) << e.what();
  }
  EXPECT_EQ(f.rows("train"), 0);
}

TEST(RunFile, LateMetricIsPaddedWithNaN) {
  const double nan = std::nan("");
  auto f = sdpo::RunFile::create(sdpo::test::temp_dir("h5") + "/run.h5", kAttributes);
  f.append_row("train", {{"epoch", 0}, {"loss", 1.0}});
  f.append_row("train", {{"epoch", 1}, {"loss", 2.0}, {"reward", 0.5}});
  f.append_row("train", {{"epoch", 2}, {"reward", 0.7}});
  EXPECT_EQ(f.rows("train"), 3);
  expect_curve(f.read_curve("train", "epoch"), {0, 1, 2}, "epoch");
  expect_curve(f.read_curve("train", "loss"), {1.0, 2.0, nan}, "loss");
  expect_curve(f.read_curve("train", "reward"), {nan, 0.5, 0.7}, "reward");
  EXPECT_THROW(f.read_curve("train", "missing"), sdpo::FileError);
  EXPECT_THROW(f.append_row("train", {{"a/b", 1.0}}), sdpo::FileError);
  EXPECT_THROW(f.append_row("/train", {{"a", 1.0}}), sdpo::FileError);
}

TEST(RunFile, EvalGroupsAreSeparate) {
  auto f = sdpo::RunFile::create(sdpo::test::temp_dir("h5") + "/run.h5", kAttributes);
  f.append_row("train", {{"epoch", 0}});
  f.append_row("eval/steps_4", {{"epoch", 0}, {"reward", 0.25}});
  f.append_row("eval/steps_4", {{"epoch", 5}, {"reward", 0.5}});
  f.append_row("eval/steps_1", {{"epoch", 0}, {"reward", 0.125}});
  EXPECT_EQ(f.rows("train"), 1);
  EXPECT_EQ(f.rows("eval/steps_4"), 2);
  EXPECT_EQ(f.rows("eval/steps_1"), 1);
  EXPECT_EQ(f.rows("eval/steps_8"), 0);
  expect_curve(f.read_curve("eval/steps_4", "reward"), {0.25, 0.5}, "steps_4");
}

TEST(RunFile, CurvesGrowPastOneChunk) {
  auto f = sdpo::RunFile::create(sdpo::test::temp_dir("h5") + "/run.h5", kAttributes);
  std::vector<double> expected;
  for (int i = 0; i < 600; ++i) {
    f.append_row("train", {{"epoch", i}});
    expected.push_back(i);
  }
  expect_curve(f.read_curve("train", "epoch"), expected, "epoch");
}

TEST(RunFile, ReopenTruncateAndResume) {
  const std::string path = sdpo::test::temp_dir("h5") + "/run.h5";
  {
    auto f = sdpo::RunFile::create(path, kAttributes);
    for (int i = 0; i < 5; ++i) f.append_row("train", {{"epoch", i}, {"loss", 10.0 * i}});
    f.append_row("eval/steps_2", {{"epoch", 0}});
  }  // destructor flushes and closes
  auto f = sdpo::RunFile::open(path);
  EXPECT_EQ(f.attribute("manifest"), kAttributes.at("manifest"));
  EXPECT_EQ(f.rows("train"), 5);
  f.truncate_rows("train", 3);
  EXPECT_EQ(f.rows("train"), 3);
  EXPECT_EQ(f.rows("eval/steps_2"), 1);  // other groups untouched
  f.truncate_rows("eval/steps_9", 0);    // absent group: nothing to do
  f.append_row("train", {{"epoch", 3}, {"loss", 99.0}});
  expect_curve(f.read_curve("train", "loss"), {0.0, 10.0, 20.0, 99.0}, "loss");
  EXPECT_THROW(f.truncate_rows("train", -1), sdpo::FileError);

  // Moving keeps the file usable.
  sdpo::RunFile g = std::move(f);
  g.flush();
  EXPECT_EQ(g.rows("train"), 4);
}

TEST(RunFile, OpenRefusesMissingAndForeignFiles) {
  const std::string dir = sdpo::test::temp_dir("h5");
  EXPECT_THROW(sdpo::RunFile::open(dir + "/none.h5"), sdpo::FileError);
  std::ofstream(dir + "/text.h5") << "not hdf5";
  try {
    sdpo::RunFile::open(dir + "/text.h5");
    ADD_FAILURE() << "expected a FileError";
  } catch (const sdpo::FileError& e) {
    EXPECT_EQ(e.path(), dir + "/text.h5");
    EXPECT_NE(std::string(e.what()).find("H5Fopen"), std::string::npos) << e.what();
  }
}

TEST(RunFile, TrajectoriesWrittenAndReplaced) {
  auto f = sdpo::RunFile::create(sdpo::test::temp_dir("h5") + "/run.h5", kAttributes);
  const std::map<std::string, at::Tensor> arrays{
      {"rewards", at::rand({4})},
      {"latents", at::rand({4, 3, 3, 8, 8}, at::kDouble)},
      {"timesteps", at::arange(12, at::kLong).reshape({4, 3})},
      {"anchor_step", at::zeros({4}, at::kInt)},
      {"empty", at::zeros({0, 3})},
      {"scalar", at::scalar_tensor(2.0)},
  };
  f.write_trajectories(0, arrays, {"a red circle", "two blue squares", "", "caf\xc3\xa9"});
  f.write_trajectories(0, arrays, {"again", "b", "c", "d"});  // resume rewrites an epoch
  f.write_trajectories(1, {}, {});
  EXPECT_THROW(f.write_trajectories(2, {{"prompts", at::zeros({1})}}, {}), sdpo::FileError);
  EXPECT_THROW(f.write_trajectories(2, {{"a/b", at::zeros({1})}}, {}), sdpo::FileError);
  EXPECT_THROW(f.write_trajectories(-1, {}, {}), sdpo::FileError);
  f.flush();
}

// The schema must be readable by h5py alone, while the run still has the file open.
TEST(RunFile, ReadableByH5pyDuringRun) {
  if (!fs::exists("/usr/bin/python3") || std::system("/usr/bin/python3 -c 'import h5py' > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with h5py not available";
  }
  const std::string dir = sdpo::test::temp_dir("h5");
  const std::string path = dir + "/run.h5";
  auto f = sdpo::RunFile::create(path, kAttributes);
  f.append_row("train", {{"epoch", 0}, {"loss", 1.5}});
  f.append_row("train", {{"epoch", 1}, {"loss", 2.5}, {"reward", 0.5}});
  f.append_row("eval/steps_4", {{"epoch", 1}, {"reward", 0.75}});
  f.write_trajectories(
      1, {{"advantages", at::ones({2, 4})}, {"timesteps", at::arange(8, at::kLong).reshape({2, 4})}},
      {"a red circle", "caf\xc3\xa9"});
  f.flush();

  const std::string script = dir + "/check.py";
  std::ofstream(script) << R"(import sys, math, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    assert f.attrs["schema_version"] == 1, f.attrs["schema_version"]
    assert f.attrs["manifest"] == '{"train": {"epochs": 2}}', f.attrs["manifest"]
    assert f.attrs["note"] == "caf\u00e9", f.attrs["note"]
    t = f["curves/train"]
    assert list(t["epoch"][:]) == [0.0, 1.0]
    assert t["loss"].dtype == np.float64 and t["loss"].maxshape == (None,) and t["loss"].chunks == (256,)
    r = t["reward"][:]
    assert math.isnan(r[0]) and r[1] == 0.5, r
    assert list(f["curves/eval/steps_4/reward"][:]) == [0.75]
    g = f["trajectories/epoch_1"]
    a = g["advantages"]
    assert a.dtype == np.float32 and a.shape == (2, 4) and a.compression == "gzip" and a.compression_opts == 4
    assert (a[:] == 1).all()
    ts = g["timesteps"]
    assert ts.dtype == np.int64 and ts[1, 3] == 7 and ts.chunks is not None
    p = [s.decode() if isinstance(s, bytes) else s for s in g["prompts"][:]]
    assert p == ["a red circle", "caf\u00e9"], p
print("h5py ok")
)";
  const std::string cmd = "/usr/bin/python3 " + script + " " + path;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

}  // namespace

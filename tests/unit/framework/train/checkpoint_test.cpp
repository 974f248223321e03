// Checkpoints keep the normalizer state's float64 values bit for bit (sdpo/train/checkpoint.h):
// Boost.JSON parses some shortest-form doubles 1 ulp off and cannot parse back an infinity, so
// the doubles also travel as a float64 tensor. A state of many awkward doubles, a NaN and an
// infinity comes back with the same bits; a damaged generator state is named with its file.
#include "sdpo/train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/normalizer.h"
#include "sdpo/core/optimizer.h"
#include "sdpo/core/safetensors.h"
#include "support/test_support.h"

namespace {

class OneWeight final : public sdpo::Model {
 public:
  at::Tensor forward(const at::Tensor& x, const at::Tensor&, const at::Tensor&) override { return w_ * x; }
  std::string prediction_type() const override { return "epsilon"; }
  std::vector<std::int64_t> latent_shape() const override { return {1, 1, 1}; }
  std::vector<at::Tensor> trainable_parameters() override { return {w_}; }
  sdpo::TensorMap state_dict() const override { return {{"w", w_}}; }
  sdpo::TensorMap trainable_state_dict() const override { return {{"w", w_}}; }
  void load_state_dict(const sdpo::TensorMap& m, bool, const std::string&) override {
    at::NoGradGuard g;
    w_.copy_(m.at("w"));
  }
  void set_training(bool) override {}
  void to(c10::Device) override {}

 private:
  at::Tensor w_ = at::ones({1}).requires_grad_(true);
};

// Holds whatever state it is given.
class StateHolder final : public sdpo::Normalizer {
 public:
  at::Tensor normalize(const at::Tensor& r, const std::vector<std::string>&) override { return r; }
  boost::json::value state() const override { return state_; }
  void load_state(const boost::json::value& s) override { state_ = s; }
  boost::json::value state_;
};

std::uint64_t bits(double d) {
  std::uint64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}

TEST(Checkpoint, TheNormalizerStateComesBackBitForBit) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const auto values = (at::randn({4000}, gen, at::kDouble) * at::exp(at::randn({4000}, gen, at::kDouble) * 5));
  boost::json::array list;
  std::vector<double> saved;
  for (std::int64_t i = 0; i < values.numel(); ++i) {
    saved.push_back(values[i].item<double>());
    list.push_back(saved.back());
  }
  StateHolder normalizer;
  normalizer.state_ = boost::json::object{
      {"buffers", boost::json::object{{"a prompt", list}}},
      {"count", 7},
      {"nan", std::numeric_limits<double>::quiet_NaN()},   // JSON writes null, and an infinity as text
      {"inf", -std::numeric_limits<double>::infinity()}};  // it cannot parse back
  // The reason for the tensor: plain JSON loses the last bit of some of these values.
  const auto reparsed = boost::json::parse(boost::json::serialize(normalizer.state_.at("buffers")));
  std::int64_t off_by_json = 0;
  for (std::size_t i = 0; i < saved.size(); ++i) {
    off_by_json += bits(reparsed.at("a prompt").as_array()[i].to_number<double>()) != bits(saved[i]);
  }
  std::cerr << "[          ] values plain JSON gets wrong: " << off_by_json << " of " << saved.size() << "\n";

  OneWeight model;
  sdpo::Optimizer optimizer(model.trainable_parameters(), sdpo::OptimizerOptions{});
  sdpo::TrainingCounters counters;
  counters.epoch = 3;
  const auto dir = sdpo::test::temp_dir("checkpoint_exact") + "/epoch_3";
  sdpo::checkpoint_save(dir, model, optimizer, normalizer, gen, counters);

  StateHolder loaded;
  EXPECT_EQ(sdpo::checkpoint_load(dir, model, nullptr, &loaded, nullptr).epoch, 3);
  const auto& back = loaded.state_.at("buffers").at("a prompt").as_array();
  ASSERT_EQ(back.size(), saved.size());
  for (std::size_t i = 0; i < saved.size(); ++i) {
    ASSERT_EQ(bits(back[i].as_double()), bits(saved[i])) << "value " << i;
  }
  EXPECT_EQ(loaded.state_.at("count").as_int64(), 7);
  EXPECT_TRUE(std::isnan(loaded.state_.at("nan").as_double()));
  EXPECT_EQ(loaded.state_.at("inf").as_double(), -std::numeric_limits<double>::infinity());
}

TEST(Checkpoint, ADamagedGeneratorStateNamesItsFile) {
  OneWeight model;
  sdpo::Optimizer optimizer(model.trainable_parameters(), sdpo::OptimizerOptions{});
  StateHolder normalizer;
  normalizer.state_ = boost::json::object{};
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto dir = sdpo::test::temp_dir("checkpoint_rng") + "/epoch_1";
  sdpo::checkpoint_save(dir, model, optimizer, normalizer, gen, {});
  const auto file = dir + "/trainer.safetensors";
  sdpo::StringMap meta;
  auto tensors = sdpo::safetensors_load(file, &meta);
  tensors["rng_state"] = at::zeros({3}, at::kByte);
  sdpo::safetensors_save(file, tensors, meta);
  sdpo::test::expect_error_names(
      [&] { sdpo::checkpoint_load(dir, model, nullptr, nullptr, &gen); },
      {file, "'rng_state' is not a CPU generator state"});
}

}  // namespace

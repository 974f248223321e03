#pragma once
// A Model decorator that counts the model's forward and backward passes, for `sdpo bench`
// (sdpo/commands/bench.h): the trainer wraps its model in one (TrainerOptions::wrap_model), so every
// algorithm's forwards are seen without any algorithm knowing. A backward is counted when a
// gradient reaches a forward's output (an autograd hook on it), so a forward whose output is
// discarded, or computed under no_grad, counts no backward.
//
// The same log then drives the bare libtorch loop the epoch is compared with
// (replay_model_calls): the same number of forwards, each of the same batch size and grad mode,
// with a backward where the run had one, on the run's own inputs.
//
// Example:
//   auto log = std::make_shared<sdpo::ModelCallLog>();
//   std::shared_ptr<sdpo::Model> counted = std::make_shared<sdpo::CountingModel>(model, log);
//   auto out = counted->forward(x, t, cond);  // log->forwards() == 1
//   out.sum().backward();                      // log->backwards() == 1
//
// Thread safety: not thread-safe, as the wrapped model.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "sdpo/core/api.h"
#include "sdpo/core/model.h"

namespace sdpo {

/// One forward as a CountingModel saw it.
struct ModelCall {
  std::int64_t batch = 0;      ///< x_t.size(0)
  bool grad = false;           ///< grad mode was on (the output could require grad)
  std::int64_t backwards = 0;  ///< gradients that reached this forward's output
};

/// Shared by the decorators of one run (policy and reference model).
struct SDPO_API ModelCallLog {
  std::vector<ModelCall> calls;
  /// Detached copies of the inputs of the largest call so far: the bare loop's inputs.
  at::Tensor x_t, t, cond;

  std::int64_t forwards() const { return static_cast<std::int64_t>(calls.size()); }
  std::int64_t backwards() const;
  /// Forgets the calls (keeps the inputs).
  void clear_calls() { calls.clear(); }
};

class SDPO_API CountingModel final : public Model {
 public:
  CountingModel(std::shared_ptr<Model> inner, std::shared_ptr<ModelCallLog> log);

  at::Tensor forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) override;

  std::string prediction_type() const override { return inner_->prediction_type(); }
  std::vector<std::int64_t> latent_shape() const override { return inner_->latent_shape(); }
  std::vector<at::Tensor> trainable_parameters() override { return inner_->trainable_parameters(); }
  TensorMap state_dict() const override { return inner_->state_dict(); }
  TensorMap trainable_state_dict() const override { return inner_->trainable_state_dict(); }
  void load_state_dict(const TensorMap& w, bool strict, const std::string& source) override {
    inner_->load_state_dict(w, strict, source);
  }
  void set_training(bool training) override { inner_->set_training(training); }
  void to(c10::Device device) override { inner_->to(device); }
  at::ScalarType trained_dtype() const override { return inner_->trained_dtype(); }
  bool has_adapter() const override { return inner_->has_adapter(); }
  void set_adapter_enabled(bool enabled) override { inner_->set_adapter_enabled(enabled); }

  const std::shared_ptr<Model>& inner() const { return inner_; }
  const std::shared_ptr<ModelCallLog>& log() const { return log_; }

 private:
  std::shared_ptr<Model> inner_;
  std::shared_ptr<ModelCallLog> log_;
};

/// The bare libtorch loop: for every call in `calls`, one forward of `model` on the log's kept
/// inputs cut to the call's batch size (under no_grad unless the call had grad mode on), then
/// `backwards` times out.sum().backward() (retaining the graph between them). Nothing else: no
/// sampler math, no loss, no optimizer step. Leaves the trainable parameters' gradients
/// undefined. Returns the wall seconds, the device synchronized at both ends.
SDPO_API double replay_model_calls(
    Model& model, const ModelCallLog& log, const std::vector<ModelCall>& calls, c10::Device device);

}  // namespace sdpo

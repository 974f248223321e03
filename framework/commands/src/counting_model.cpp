#include "sdpo/commands/counting_model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>

#include "sdpo/core/error.h"
#include "sdpo/train/clocks.h"

namespace sdpo {

std::int64_t ModelCallLog::backwards() const {
  std::int64_t n = 0;
  for (const auto& c : calls) n += c.backwards;
  return n;
}

CountingModel::CountingModel(std::shared_ptr<Model> inner, std::shared_ptr<ModelCallLog> log)
    : inner_(std::move(inner)), log_(std::move(log)) {
  if (!inner_ || !log_) throw Error("CountingModel: needs a model and a log");
}

at::Tensor CountingModel::forward(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& cond) {
  const std::int64_t batch = x_t.size(0);
  if (!log_->x_t.defined() || batch > log_->x_t.size(0)) {
    log_->x_t = x_t.detach().clone();
    log_->t = t.detach().clone();
    log_->cond = cond.detach().clone();
  }
  const std::size_t index = log_->calls.size();
  log_->calls.push_back({batch, at::GradMode::is_enabled(), 0});
  at::Tensor out = inner_->forward(x_t, t, cond);
  if (out.requires_grad()) {
    std::weak_ptr<ModelCallLog> weak = log_;
    out.register_hook([weak, index](const at::Tensor&) {
      if (auto log = weak.lock()) {
        if (index < log->calls.size()) log->calls[index].backwards += 1;
      }
    });
  }
  return out;
}

double replay_model_calls(
    Model& model, const ModelCallLog& log, const std::vector<ModelCall>& calls, c10::Device device) {
  if (calls.empty()) return 0;
  if (!log.x_t.defined()) throw Error("replay_model_calls: the log kept no inputs");
  synchronize_device(device);
  const auto start = std::chrono::steady_clock::now();
  for (const auto& c : calls) {
    if (c.batch > log.x_t.size(0)) throw Error("replay_model_calls: a call is larger than the kept inputs");
    auto x = log.x_t.narrow(0, 0, c.batch), t = log.t.narrow(0, 0, c.batch), cond = log.cond.narrow(0, 0, c.batch);
    at::AutoGradMode grad_mode(c.grad);
    at::Tensor out = model.forward(x, t, cond);
    if (c.backwards > 0 && out.requires_grad()) {
      auto loss = out.sum();
      for (std::int64_t b = 0; b < c.backwards; ++b) loss.backward({}, /*retain_graph=*/b + 1 < c.backwards);
    }
  }
  synchronize_device(device);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (auto& p : model.trainable_parameters()) p.mutable_grad() = at::Tensor();
  return seconds;
}

}  // namespace sdpo

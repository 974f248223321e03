// The union layout of the ranks' rollouts and the gathers of sdpo/distributed/data_parallel.h.
#include "sdpo/distributed/data_parallel.h"

#include <ATen/ATen.h>

#include <unordered_map>

#include "sdpo/core/error.h"
#include "sdpo/distributed/distributed.h"

namespace sdpo {

at::Tensor cat_rows(const std::vector<at::Tensor>& parts, bool paired) {
  if (!parts.front().defined()) return at::Tensor();
  if (!paired) return at::cat(parts, 0);
  std::vector<at::Tensor> a, b;
  for (const auto& p : parts) {
    auto half = p.size(0) / 2;
    a.push_back(p.slice(0, 0, half));
    b.push_back(p.slice(0, half));
  }
  a.insert(a.end(), b.begin(), b.end());
  return at::cat(a, 0);
}

std::vector<std::string> cat_prompts(const std::vector<std::vector<std::string>>& parts, bool paired) {
  std::vector<std::string> a, b;
  for (const auto& p : parts) {
    auto half = paired ? p.size() / 2 : p.size();
    a.insert(a.end(), p.begin(), p.begin() + static_cast<long>(half));
    b.insert(b.end(), p.begin() + static_cast<long>(half), p.end());
  }
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

at::Tensor rank_rows(const at::Tensor& all, int rank, int world, bool paired) {
  const std::int64_t n = all.size(0), w = world, r = rank;
  TORCH_CHECK(n % (paired ? 2 * w : w) == 0, "rank_rows: ", n, " rows do not split into ", world, " equal rank parts");
  if (!paired) return all.slice(0, r * (n / w), (r + 1) * (n / w));
  const std::int64_t half = n / 2, h = half / w;
  return at::cat({all.slice(0, r * h, (r + 1) * h), all.slice(0, half + r * h, half + (r + 1) * h)}, 0);
}

RolloutBuffer merge_rollouts(const std::vector<RolloutBuffer>& parts) {
  const bool paired = parts.front().paired;
  auto field = [&](at::Tensor RolloutBuffer::*f) {
    std::vector<at::Tensor> v;
    for (const auto& p : parts) v.push_back(p.*f);
    return cat_rows(v, paired);
  };
  RolloutBuffer out;
  out.num_steps = parts.front().num_steps;
  out.paired = paired;
  std::vector<std::vector<std::string>> prompts;
  for (const auto& p : parts) prompts.push_back(p.prompts);
  out.prompts = cat_prompts(prompts, paired);
  for (auto f :
       {&RolloutBuffer::cond, &RolloutBuffer::timesteps, &RolloutBuffer::latents, &RolloutBuffer::next_latents,
        &RolloutBuffer::log_probs, &RolloutBuffer::pred_x0, &RolloutBuffer::query_steps,
        &RolloutBuffer::queried_rewards, &RolloutBuffer::similarities, &RolloutBuffer::anchor_step,
        &RolloutBuffer::final_rewards, &RolloutBuffer::dense_rewards, &RolloutBuffer::returns,
        &RolloutBuffer::advantages}) {
    out.*f = field(f);
  }
  return out;
}

GatheredRewards gather_rewards(const RolloutBuffer& local, const std::vector<std::string>& pool, Distributed& dist) {
  std::unordered_map<std::string, std::int64_t> index;
  for (std::size_t i = 0; i < pool.size(); ++i) index.emplace(pool[i], static_cast<std::int64_t>(i));
  auto ids = at::empty({local.size()}, at::TensorOptions().dtype(at::kLong));
  for (std::int64_t i = 0; i < local.size(); ++i) {
    auto it = index.find(local.prompts[static_cast<std::size_t>(i)]);
    if (it == index.end())
      throw Error(
          "gather_rewards: prompt '" + local.prompts[static_cast<std::size_t>(i)] + "' is not a training prompt");
    ids[i] = it->second;
  }
  GatheredRewards g;
  g.dense_rewards = cat_rows(dist.all_gather(local.dense_rewards.contiguous(), "dense rewards"), local.paired);
  const auto all_ids = cat_rows(dist.all_gather(ids, "prompt ids"), local.paired);
  const auto* p = all_ids.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < all_ids.size(0); ++i) g.prompts.push_back(pool[static_cast<std::size_t>(p[i])]);
  return g;
}

Metrics mean_over_ranks(const Metrics& metrics, Distributed& dist) {
  if (metrics.empty()) return metrics;
  auto values = at::empty({static_cast<std::int64_t>(metrics.size())}, at::TensorOptions().dtype(at::kDouble));
  std::int64_t i = 0;
  for (const auto& [k, v] : metrics) values[i++] = v;
  dist.all_reduce_sum(values, "metrics");
  values.div_(static_cast<double>(dist.world_size()));
  Metrics out;
  i = 0;
  for (const auto& [k, v] : metrics) out[k] = values[i++].item<double>();
  return out;
}

}  // namespace sdpo

#include "sdpo/train/evaluation.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include "sdpo/core/decoder.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/distributed/distributed.h"
#include "sdpo/train/image_io.h"
#include "sdpo/train/sampling.h"

namespace sdpo {

at::Tensor generate_images(
    Components& c,
    const std::vector<std::string>& prompts,
    const std::vector<std::int64_t>& seeds,
    std::int64_t steps,
    c10::Device device,
    std::int64_t forward_batch) {
  TORCH_CHECK(prompts.size() == seeds.size(), "generate_images: one seed per prompt");
  at::NoGradGuard no_grad;
  const auto shape = c.model->latent_shape();
  std::vector<at::Tensor> noise;
  for (auto seed : seeds) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(seed));
    std::vector<std::int64_t> s{1};
    s.insert(s.end(), shape.begin(), shape.end());
    noise.push_back(at::randn(s, g) * c.sampler->init_noise_sigma());
  }
  // The step noise of the whole batch comes from one generator seeded by the first seed, so a
  // fixed (prompts, seeds) list is reproducible.
  auto step_gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(seeds.front()) + 7919);
  std::vector<at::Tensor> images;
  const std::size_t chunk = 64;
  for (std::size_t start = 0; start < prompts.size(); start += chunk) {
    std::size_t end = std::min(prompts.size(), start + chunk);
    std::vector<std::string> p(prompts.begin() + static_cast<long>(start), prompts.begin() + static_cast<long>(end));
    auto x_T = at::cat(
        std::vector<at::Tensor>(noise.begin() + static_cast<long>(start), noise.begin() + static_cast<long>(end)), 0);
    auto cond = c.text_encoder->encode(p);
    auto tr = sample_trajectories(*c.model, *c.sampler, cond, x_T.to(device), steps, step_gen, false, forward_batch);
    images.push_back(c.decoder->decode(tr.pred_x0.select(1, tr.pred_x0.size(1) - 1)));
  }
  return at::cat(images, 0);
}

std::vector<std::string> evaluation_prompts(const Manifest& m, const Components& c) {
  const auto& e = m.eval;
  std::vector<std::string> set = e.prompt_set == "train"    ? c.prompts->train_prompts()
                                 : e.prompt_set == "unseen" ? c.prompts->unseen_prompts()
                                                            : c.prompts->eval_prompts();
  if (set.empty()) {
    throw ManifestError(
        m.file, "eval.prompt_set", "prompt source '" + m.prompts.name + "' has no \"" + e.prompt_set + "\" prompts");
  }
  if (e.max_prompts > 0 && static_cast<std::int64_t>(set.size()) > e.max_prompts)
    set.resize(static_cast<size_t>(e.max_prompts));
  return set;
}

EvalResult evaluate_model(const Manifest& m, Components& c, c10::Device device, Distributed* dist) {
  TORCH_CHECK(c.reward, "evaluation needs a reward");
  const auto& e = m.eval;
  const std::vector<std::string> set = evaluation_prompts(m, c);
  std::vector<std::string> prompts;
  std::vector<std::int64_t> seeds;
  for (std::int64_t s = 0; s < e.seeds; ++s) {
    for (std::size_t i = 0; i < set.size(); ++i) {
      prompts.push_back(set[i]);
      seeds.push_back(e.seed + s * 100003 + static_cast<std::int64_t>(i));
    }
  }
  EvalResult r;
  const std::int64_t grid_rows = std::min<std::int64_t>(m.output.grid_prompts, static_cast<std::int64_t>(set.size()));
  // This rank's share: every world-th image from its rank on (strided, so rank 0 always holds
  // image 0 and the grid keeps its row order when put back together).
  const std::size_t world = dist ? static_cast<std::size_t>(dist->world_size()) : 1;
  const std::size_t rank = dist ? static_cast<std::size_t>(dist->rank()) : 0;
  std::vector<std::string> my_prompts;
  std::vector<std::int64_t> my_seeds;
  for (std::size_t i = rank; i < prompts.size(); i += world) {
    my_prompts.push_back(prompts[i]);
    my_seeds.push_back(seeds[i]);
  }
  std::vector<at::Tensor> columns;
  for (auto steps : e.steps) {
    at::Tensor images, scores;
    if (!my_prompts.empty()) {
      images = generate_images(c, my_prompts, my_seeds, steps, device, m.sample.forward_batch);
      at::NoGradGuard no_grad;
      scores = c.reward->score(images, my_prompts).to(at::kDouble).cpu();
    } else {
      scores = at::empty({0}, at::kDouble);
    }
    at::Tensor grid_part;  // (rows, 3, H, W): this rank's images among the first grid_rows
    if (dist) {
      scores = at::cat(dist->all_gather(scores.reshape({-1}), "evaluation rewards"), 0);
      // Images travel flat (a rank may hold none, and then knows no image shape).
      const auto mine = static_cast<std::int64_t>(
          grid_rows > static_cast<std::int64_t>(rank) ? (static_cast<std::size_t>(grid_rows) - rank + world - 1) / world
                                                      : 0);
      at::Tensor flat =
          mine > 0 ? images.slice(0, 0, mine).to(at::kFloat).cpu().reshape({-1}) : at::empty({0}, at::kFloat);
      auto parts = dist->all_gather(flat, "evaluation images");
      if (dist->is_main()) {
        auto shape = images.sizes().vec();  // rank 0 holds image 0
        shape[0] = -1;
        std::vector<at::Tensor> rows;
        for (std::int64_t i = 0; i < grid_rows; ++i) {
          const auto w = static_cast<std::int64_t>(world);
          rows.push_back(parts[static_cast<std::size_t>(i % w)].view(shape)[i / w]);
        }
        grid_part = at::stack(rows, 0);
      }
    } else {
      grid_part = images.slice(0, 0, grid_rows).cpu();
    }
    if (!at::isfinite(scores).all().item<bool>()) {
      throw NumericError(
          "reward '" + m.reward.name + "' produced NaN or Inf during evaluation at " + std::to_string(steps) +
          " steps");
    }
    r.per_steps[steps] = {scores.mean().item<double>(), scores.std(false).item<double>(), scores.size(0)};
    if (grid_part.defined()) columns.push_back(grid_part);
  }
  // Grid: one row per prompt, one column per step count.
  if (!columns.empty()) {
    auto stacked = at::stack(columns, 1);  // (rows, n_steps, 3, H, W)
    r.grid = image_grid(stacked.flatten(0, 1), static_cast<std::int64_t>(columns.size()), 2, 2);
  }
  return r;
}

}  // namespace sdpo

// `sdpo analyze dense-rewards`: Table 3 of the paper (research/algorithms.md 9.1 "Table 3
// metrics", 12.2) on any manifest. The target is the "50 queries" predictor of 9.1 (R̂_k = q(k),
// every step decoded and scored); every registered predictor is compared with it on the same
// trajectories.
#include "sdpo/commands/dense_reward_analysis_driver.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>

#include "sdpo/core/algorithm.h"
#include "sdpo/core/decoder.h"
#include "sdpo/core/dense_reward.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/registry.h"
#include "sdpo/core/reward.h"
#include "sdpo/core/sampler.h"
#include "sdpo/core/text_encoder.h"
#include "sdpo/train/components.h"
#include "sdpo/train/run_file.h"
#include "sdpo/train/sampling.h"

namespace sdpo {
namespace fs = std::filesystem;

namespace {

const char* const kDescription =
    "each trajectory's dense rewards (predicted and target) z-scored over its T steps (population std; "
    "a constant trajectory gives zeros); cosine_mean: mean over trajectories of the per-trajectory cosine "
    "similarity; l1_sum, l2_sum: per-trajectory L1 and L2 distances summed over trajectories; l2_pooled: "
    "sqrt of the summed squared per-trajectory L2 distances (the scale of the paper's Table 3 L2); target: "
    "the exact reward of every step's decoded predicted x0";

// Trajectories per training epoch (7.1): batch_size prompts x batches_per_epoch, two per prompt
// for a paired algorithm.
std::int64_t epoch_trajectories(const Manifest& m, bool paired) {
  return m.train.batch_size * m.train.batches_per_epoch * (paired ? 2 : 1);
}

bool algorithm_is_paired(const Manifest& m) {
  if (m.algorithm.name.empty()) return false;
  return Registry::global().create<Algorithm>(m.algorithm)->spec().paired;
}

void check_finite(const at::Tensor& t, const std::string& what) {
  if (!at::isfinite(t).all().item<bool>()) throw NumericError(what + " produced NaN or Inf during the analysis");
}

std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

void write_csv(const std::string& path, const DenseRewardAnalysis& a) {
  std::ofstream f(path);
  if (!f) throw FileError(path, "cannot open for writing");
  f << "predictor,queries_per_trajectory,cosine_mean,l1_sum,l2_sum,l2_pooled\n";
  f << std::setprecision(std::numeric_limits<double>::max_digits10);
  for (const auto& r : a.rows) {
    const auto& c = r.comparison;
    f << csv_quote(r.predictor) << ',' << r.queries_per_trajectory << ',' << c.cosine_mean << ',' << c.l1_sum << ','
      << c.l2_sum << ',' << c.l2_pooled << '\n';
  }
  errno = 0;
  f.flush();
  if (!f) throw FileError(path, std::string("write failed: ") + (errno ? std::strerror(errno) : "stream error"));
}

void write_h5(const std::string& path, const DenseRewardAnalysis& a, const Manifest& m) {
  TableFile t;
  t.string_attributes = {{"manifest", m.text()}, {"reward", a.reward}, {"description", kDescription}};
  t.integer_attributes = {{"trajectories", a.trajectories}, {"steps", a.steps}};
  auto& names = t.string_columns["predictor"];
  auto& queries = t.integer_columns["queries_per_trajectory"];
  auto& cosine = t.number_columns["cosine_mean"];
  auto& l1 = t.number_columns["l1_sum"];
  auto& l2 = t.number_columns["l2_sum"];
  auto& pooled = t.number_columns["l2_pooled"];
  for (const auto& r : a.rows) {
    names.push_back(r.predictor);
    queries.push_back(r.queries_per_trajectory);
    cosine.push_back(r.comparison.cosine_mean);
    l1.push_back(r.comparison.l1_sum);
    l2.push_back(r.comparison.l2_sum);
    pooled.push_back(r.comparison.l2_pooled);
  }
  RunFile::write_table(path, t);
}

}  // namespace

DenseRewardAnalysis analyze_dense_rewards(const Manifest& m, const DenseRewardAnalysisOptions& options) {
  if (m.reward.name.empty()) {
    throw ManifestError(m.file, "reward", "the dense-reward analysis needs a reward: name one as {\"name\": ...}");
  }
  if (options.trajectories < 0) {
    throw Error(
        "analyze dense-rewards: --trajectories must be >= 0 (0: one training epoch's worth), got " +
        std::to_string(options.trajectories));
  }
  Components c = build_components(m, ComponentSet::kSampling);  // loads the plugins too
  const c10::Device device(m.device);
  const std::int64_t T = m.sample.steps;
  const bool paired = algorithm_is_paired(m);
  const std::int64_t N = options.trajectories > 0 ? options.trajectories : epoch_trajectories(m, paired);
  // Sampling batches as large as the trainer's (a pair's two members are sampled together, 7.1).
  const std::int64_t chunk = std::max<std::int64_t>(1, m.train.batch_size * (paired ? 2 : 1));

  std::vector<std::string> names = Registry::global().names(DenseRewardPredictor::kKind);
  if (names.empty()) throw Error("analyze dense-rewards: no dense_reward predictor is registered");
  std::vector<std::shared_ptr<DenseRewardPredictor>> predictors;
  for (const auto& name : names) {
    ComponentConfig cfg;
    cfg.kind = DenseRewardPredictor::kKind;
    cfg.name = name;
    cfg.file = "<defaults>";
    cfg.json_path = "dense_reward.options";
    predictors.push_back(Registry::global().create<DenseRewardPredictor>(cfg));
  }

  at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(m.train.seed));
  // Plans draw from their own generator (random anchors, 9.1), so adding a predictor leaves the
  // trajectories unchanged.
  auto plan_gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(m.train.seed) + 1);
  const auto& pool = c.prompts->train_prompts();
  const auto shape = c.model->latent_shape();
  std::vector<at::Tensor> target_parts;
  std::vector<std::vector<at::Tensor>> dense_parts(predictors.size());
  std::vector<std::int64_t> queries(predictors.size(), -1);
  for (std::int64_t done = 0; done < N;) {
    const std::int64_t b = std::min(chunk, N - done);
    // Prompts uniformly with replacement from the training set, fresh noise (7.1).
    auto idx = at::randint(static_cast<std::int64_t>(pool.size()), {b}, gen, at::TensorOptions().dtype(at::kLong));
    std::vector<std::string> prompts;
    for (std::int64_t i = 0; i < b; ++i) prompts.push_back(pool[static_cast<size_t>(idx[i].item<std::int64_t>())]);
    std::vector<std::int64_t> noise_shape{b};
    noise_shape.insert(noise_shape.end(), shape.begin(), shape.end());
    auto x_T = at::randn(noise_shape, gen) * c.sampler->init_noise_sigma();
    auto cond = c.text_encoder->encode(prompts);
    Trajectories tr =
        sample_trajectories(*c.model, *c.sampler, cond, x_T.to(device), T, gen, true, m.sample.forward_batch);

    // The target (9.1 "50 queries"): q(k) = R(decode(x̂^(k))) for every step, one decode per step.
    std::vector<at::Tensor> columns;
    for (std::int64_t k = 0; k < T; ++k) {
      columns.push_back(c.reward->score(c.decoder->decode(tr.pred_x0.select(1, k)), prompts).to(at::kFloat).cpu());
    }
    auto target = at::stack(columns, 1);  // (b, T)
    check_finite(target, "reward '" + m.reward.name + "'");
    target_parts.push_back(target);

    for (std::size_t p = 0; p < predictors.size(); ++p) {
      QueryPlan plan = predictors[p]->plan(tr.pred_x0, plan_gen);
      TORCH_CHECK(
          plan.steps.defined() && plan.steps.dim() == 2 && plan.steps.size(0) == b, "dense_reward '", names[p],
          "': plan() must return (N, Q) steps");
      auto steps = plan.steps.to(at::kCPU, at::kLong);
      TORCH_CHECK(
          steps.numel() == 0 || (steps.min().item<std::int64_t>() >= 0 && steps.max().item<std::int64_t>() < T),
          "dense_reward '", names[p], "': planned steps outside [0, ", T, ")");
      // The exact rewards it asked for, taken from the target: no extra reward calls.
      auto queried = target.gather(1, steps).to(tr.pred_x0.device());
      auto dense = predictors[p]->predict(plan, queried).to(at::kCPU, at::kFloat);
      TORCH_CHECK(
          dense.dim() == 2 && dense.size(0) == b && dense.size(1) == T, "dense_reward '", names[p],
          "': predict() must return (N, T) = (", b, ", ", T, "), got ", dense.sizes());
      check_finite(dense, "dense_reward '" + names[p] + "'");
      dense_parts[p].push_back(dense);
      queries[p] = steps.size(1);
    }
    done += b;
  }

  DenseRewardAnalysis a;
  a.trajectories = N;
  a.steps = T;
  a.reward = m.reward.name;
  a.target = at::cat(target_parts, 0);
  for (std::size_t p = 0; p < predictors.size(); ++p) {
    DenseRewardAnalysisRow r;
    r.predictor = names[p];
    r.queries_per_trajectory = queries[p];
    r.dense = at::cat(dense_parts[p], 0);
    r.comparison = compare_dense_rewards(r.dense, a.target);
    a.rows.push_back(std::move(r));
  }

  const fs::path dir = options.output_dir.empty() ? fs::path(m.output.dir) / m.name : fs::path(options.output_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw FileError(dir.string(), "cannot create the output folder: " + ec.message());
  a.csv_path = (dir / "dense_reward_analysis.csv").string();
  a.h5_path = (dir / "dense_reward_analysis.h5").string();
  write_csv(a.csv_path, a);
  write_h5(a.h5_path, a, m);
  return a;
}

std::string format_dense_reward_analysis(const DenseRewardAnalysis& a) {
  std::ostringstream s;
  s << "dense-reward predictors vs the target (every step queried): reward '" << a.reward << "', " << a.trajectories
    << " trajectories of T = " << a.steps << " steps\n"
    << "each trajectory's rewards z-scored over its steps (constant -> zeros); cosine: mean over trajectories;\n"
    << "L1, L2: per-trajectory distances summed over trajectories; L2 pooled: sqrt of the summed squared L2\n\n";
  std::size_t width = 9;  // "predictor"
  for (const auto& r : a.rows) width = std::max(width, r.predictor.size());
  s << std::left << std::setw(static_cast<int>(width)) << "predictor" << std::right << std::setw(14) << "queries/traj"
    << std::setw(14) << "cosine mean" << std::setw(14) << "L1 sum" << std::setw(14) << "L2 sum" << std::setw(14)
    << "L2 pooled"
    << "\n";
  for (const auto& r : a.rows) {
    const auto& c = r.comparison;
    s << std::left << std::setw(static_cast<int>(width)) << r.predictor << std::right << std::setw(14)
      << r.queries_per_trajectory << std::fixed << std::setprecision(4) << std::setw(14) << c.cosine_mean
      << std::setprecision(3) << std::setw(14) << c.l1_sum << std::setw(14) << c.l2_sum << std::setw(14) << c.l2_pooled
      << "\n";
    s.unsetf(std::ios::fixed);
  }
  return s.str();
}

}  // namespace sdpo

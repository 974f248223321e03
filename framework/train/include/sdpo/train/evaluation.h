#pragma once
// Evaluation at several sampling step counts on fixed prompts and fixed seeds (DESIGN.md
// section 3, step 6; research/algorithms.md 10.2). The image of an n-step sample is the decoded
// predicted x0 of its last step (the quantity the SDPO reference logs as `<reward>_<n>s`).

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "sdpo/train/components.h"
#include "sdpo/train/manifest.h"

namespace sdpo {

class Distributed;

struct RewardStats {
  double mean = 0, std = 0;
  std::int64_t count = 0;
};

struct EvalResult {
  std::map<std::int64_t, RewardStats> per_steps;  ///< step count -> reward statistics
  at::Tensor grid;                                ///< (3, H', W'): rows = prompts, columns = step counts
};

/// Generates one image per prompt with `steps` sampling steps. Image i starts from noise drawn
/// by a generator seeded with seeds[i]; the same seed gives the same initial noise at every
/// step count. `forward_batch`: latents per model call (sdpo/train/sampling.h; 0: all).
/// Returns (N, 3, H, W) in [0, 1].
at::Tensor generate_images(
    Components& c,
    const std::vector<std::string>& prompts,
    const std::vector<std::int64_t>& seeds,
    std::int64_t steps,
    c10::Device device,
    std::int64_t forward_batch = 0);

/// The evaluation prompts: eval.prompt_set of the prompt source, cut to eval.max_prompts. An empty
/// set throws a ManifestError at eval.prompt_set (the trainer checks it before the first epoch).
std::vector<std::string> evaluation_prompts(const Manifest& m, const Components& c);

/// Evaluates at every m.eval.steps on the manifest's evaluation prompts x m.eval.seeds seeds.
/// With a process group (sdpo/distributed/distributed.h) every rank calls it: rank r generates and scores
/// images r, r + n, r + 2n, ... of the list (n ranks), the scores and the grid's images are
/// all-gathered, and every rank returns the statistics of all of them; the grid is set on rank 0
/// only. (A rank's images draw their step noise from their own first seed, so the numbers of a
/// multi-rank evaluation are not bit-identical to a one-process one.)
EvalResult evaluate_model(const Manifest& m, Components& c, c10::Device device, Distributed* dist = nullptr);

}  // namespace sdpo

// `sdpo_toy_geneval`: the toy world's GenEval benchmark (README.md "Evaluation"). Samples a
// model (the manifest's base model or a training checkpoint) on a fixed prompt set x fixed seeds
// at several step counts, scores every image with the toy GenEval checks (detector.h, geneval.h,
// called directly rather than through the reward registry, so that the strict and the soft score
// of the same detection are both at hand) and prints GenEval's table: per-category accuracy and
// overall, one row per step count.

#include <ATen/ATen.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "detector.h"
#include "geneval.h"
#include "report.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/prompts.h"
#include "sdpo/core/sampler.h"
#include "sdpo/models/toy/world.h"
#include "sdpo/train/checkpoint.h"
#include "sdpo/train/components.h"
#include "sdpo/train/evaluation.h"
#include "sdpo/train/image_io.h"
#include "sdpo/train/manifest.h"
#include "sdpo/train/threads.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
namespace tg = sdpo::toy_geneval;

namespace {

const char* kUsage = R"(sdpo_toy_geneval: GenEval's table on the toy world (rewards/toy_geneval/README.md)

usage: sdpo_toy_geneval MANIFEST [--checkpoint DIR|base] [--set json.path=value ...]
                        [--steps 1,2,4,8,16] [--seeds 4] [--prompts geneval|eval|unseen|train]
                        [--csv FILE] [--images DIR] [--threads N]

  MANIFEST            run manifest: its model, text_encoder, decoder, sampler and prompts are built
  --checkpoint DIR    training checkpoint folder (checkpoints/epoch_<k>) whose model weights are
                      loaded; 'base' (default): the manifest's model as it is
  --set PATH=VALUE    manifest override, as `sdpo train --set` (repeatable)
  --steps LIST        comma-separated sampling step counts (default: the manifest's eval.steps)
  --seeds N           images per prompt (default 4); image s of prompt i starts from the noise of
                      seed eval.seed + 100003 s + i, as the trainer's evaluation
  --prompts SET       geneval (default): the fixed 48-prompt toy GenEval set (12 per category);
                      eval, unseen, train: that set of the manifest's prompt source
  --csv FILE          one row per image: steps,prompt,category,seed,strict,soft,failed
  --images DIR        DIR/steps_<n>.png per step count: rows = prompts, columns = seeds
  --threads N         libtorch intra-op threads (default: SDPO_THREADS, else OMP_NUM_THREADS,
                      else every hardware thread)

Prints a Markdown table: one row per step count; each category's accuracy (mean strict score of
its images), overall (mean of the category accuracies, as GenEval averages its tasks) and the
same mean of the soft scores. Exit status: 0 done, 1 runtime error, 2 bad command line.
)";

// Bad command-line input, found while parsing or once the manifest tells what the values must be
// (a step count the sampler cannot take): exit status 2, unlike a runtime error's 1.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Arguments {
  std::string manifest;
  std::string checkpoint = "base";
  std::vector<std::string> sets;
  std::optional<std::vector<std::int64_t>> steps;  // unset: the manifest's eval.steps
  std::int64_t seeds = 4;
  std::string prompts = "geneval";
  std::string csv;
  std::string images;
  int threads = 0;  // 0: not given (sdpo::resolve_threads)
};

std::vector<std::int64_t> parse_steps(const std::string& text) {
  std::vector<std::int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::size_t used = 0;
    std::int64_t n = 0;
    try {
      n = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || n < 1)
      throw UsageError("--steps: expected comma-separated positive integers such as 1,2,4,8, got '" + text + "'");
    out.push_back(n);
  }
  if (out.empty()) throw UsageError("--steps: expected at least one step count, got '" + text + "'");
  return out;
}

Arguments parse_arguments(int argc, char** argv) {
  Arguments a;
  std::string steps, threads;
  po::options_description d("sdpo_toy_geneval");
  d.add_options()("manifest", po::value(&a.manifest)->required(), "run manifest")(
      "checkpoint", po::value(&a.checkpoint), "checkpoint folder or 'base'")(
      "set", po::value<std::vector<std::string>>(&a.sets)->composing(), "json.path=value override")(
      "steps", po::value(&steps), "comma-separated step counts")("seeds", po::value(&a.seeds), "images per prompt")(
      "prompts", po::value(&a.prompts), "geneval, eval, unseen or train")("csv", po::value(&a.csv), "per-image CSV")(
      "images", po::value(&a.images), "folder for the image grids")("threads", po::value(&threads), "threads");
  po::positional_options_description pos;
  pos.add("manifest", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(d).positional(pos).run(), vm);
  po::notify(vm);
  if (!steps.empty() || vm.count("steps")) a.steps = parse_steps(steps);
  if (a.seeds < 1)
    throw UsageError("--seeds: expected a positive number of images per prompt, got " + std::to_string(a.seeds));
  if (a.prompts != "geneval" && a.prompts != "eval" && a.prompts != "unseen" && a.prompts != "train")
    throw UsageError("--prompts: expected geneval, eval, unseen or train, got '" + a.prompts + "'");
  if (a.checkpoint.empty()) throw UsageError("--checkpoint: expected a checkpoint folder or 'base', got ''");
  if (vm.count("threads")) {
    try {
      a.threads = sdpo::parse_thread_count(threads, "--threads");
    } catch (const sdpo::Error& e) {
      throw UsageError(e.what());
    }
  }
  return a;
}

// The prompts and their scenes, checked before any image is generated: a prompt source whose
// prompts are not toy-world prompts cannot be scored.
struct PromptList {
  std::vector<std::string> prompts;
  std::vector<sdpo::toy::Scene> scenes;
};

PromptList prompt_list(const Arguments& a, const sdpo::Manifest& m, const sdpo::Components& c) {
  PromptList out;
  if (a.prompts == "geneval") {
    for (const tg::GenevalPrompt& p : tg::geneval_prompts()) out.prompts.push_back(p.prompt);
  } else {
    out.prompts = a.prompts == "train"    ? c.prompts->train_prompts()
                  : a.prompts == "unseen" ? c.prompts->unseen_prompts()
                                          : c.prompts->eval_prompts();
    if (out.prompts.empty())
      throw sdpo::Error(
          "--prompts " + a.prompts + ": prompt source '" + m.prompts.name + "' of " + m.file + " has no such prompts");
  }
  for (const std::string& p : out.prompts) {
    const std::optional<sdpo::toy::Scene> scene = sdpo::toy::parse(p);
    if (!scene)
      throw sdpo::Error(
          "--prompts " + a.prompts + ": prompt '" + p + "' of prompt source '" + m.prompts.name + "' (" + m.file +
          ") is not a toy-world prompt (models/toy/include/sdpo/models/toy/world.h); the toy "
          "GenEval checks read only those");
    out.scenes.push_back(*scene);
  }
  return out;
}

// Every step count is tried on the sampler's schedule first, so that a count it cannot take
// (the lcm sampler's limit is its original_inference_steps) fails before minutes of sampling.
void check_steps(const std::vector<std::int64_t>& steps, const sdpo::Manifest& m, const sdpo::Sampler& sampler) {
  for (std::int64_t n : steps) {
    try {
      (void)sampler.timesteps(n);
    } catch (const c10::Error& e) {
      throw UsageError(
          "--steps: sampler '" + m.sampler.name + "' of " + m.file + " cannot take " + std::to_string(n) +
          " steps: " + e.what_without_backtrace());
    } catch (const std::exception& e) {
      throw UsageError(
          "--steps: sampler '" + m.sampler.name + "' of " + m.file + " cannot take " + std::to_string(n) +
          " steps: " + e.what());
    }
  }
}

int run(const Arguments& a) {
  sdpo::apply_threads(sdpo::resolve_threads(a.threads, sdpo::ThreadEnvironment::current()));
  const sdpo::Manifest m = sdpo::Manifest::load(a.manifest, a.sets);
  const std::vector<std::int64_t> steps = a.steps ? *a.steps : m.eval.steps;
  if (steps.empty()) throw UsageError("--steps: the manifest's eval.steps is empty; give --steps");

  sdpo::load_plugins(m);
  sdpo::Components c = sdpo::build_components(m, sdpo::ComponentSet::kSampling);
  check_steps(steps, m, *c.sampler);
  const PromptList list = prompt_list(a, m, c);
  if (a.checkpoint != "base") sdpo::checkpoint_load(a.checkpoint, *c.model, nullptr, nullptr, nullptr);

  // Outputs are opened before any sampling, so that a path that cannot be written fails at once.
  std::ofstream csv;
  if (!a.csv.empty()) {
    csv.open(a.csv);
    if (!csv) throw sdpo::FileError(a.csv, "--csv: cannot open the file for writing");
    tg::write_csv_header(csv);
  }
  if (!a.images.empty()) {
    std::error_code ec;
    fs::create_directories(a.images, ec);
    if (ec || !fs::is_directory(a.images))
      throw sdpo::FileError(a.images, "--images: cannot create the folder: " + ec.message());
  }

  // The trainer's evaluation order and seeds (sdpo::evaluate_model): seed-major, image s of
  // prompt i from seed eval.seed + 100003 s + i, so that `--prompts eval` reproduces its images.
  const auto n_prompts = static_cast<std::int64_t>(list.prompts.size());
  std::vector<std::string> prompts;
  std::vector<sdpo::toy::Scene> scenes;
  std::vector<std::int64_t> seeds;
  for (std::int64_t s = 0; s < a.seeds; ++s)
    for (std::int64_t i = 0; i < n_prompts; ++i) {
      prompts.push_back(list.prompts[static_cast<std::size_t>(i)]);
      scenes.push_back(list.scenes[static_cast<std::size_t>(i)]);
      seeds.push_back(m.eval.seed + s * 100003 + i);
    }

  std::cout << "toy GenEval: " << a.manifest << ", checkpoint " << a.checkpoint << ", sampler " << m.sampler.name
            << ", prompts " << a.prompts << " (" << n_prompts << ") x " << a.seeds << " seeds (eval.seed "
            << m.eval.seed << " + 100003 s + i) = " << prompts.size() << " images per step count\n\n";

  std::vector<tg::ImageResult> all;
  const c10::Device device(m.device);
  for (std::int64_t n : steps) {
    const auto start = std::chrono::steady_clock::now();
    const at::Tensor images = sdpo::generate_images(c, prompts, seeds, n, device).to(at::kCPU, at::kFloat).contiguous();
    std::vector<tg::ImageResult> results;
    for (std::size_t k = 0; k < prompts.size(); ++k) {
      const tg::Evaluation e = tg::evaluate(scenes[k], tg::detect(images[static_cast<std::int64_t>(k)]));
      tg::ImageResult r{n, prompts[k], e.category, seeds[k], e.strict, e.soft, {}};
      for (const tg::Requirement& q : e.requirements)
        if (!q.met) r.failed.push_back(q.name);
      results.push_back(std::move(r));
    }
    if (csv.is_open()) {
      tg::write_csv_rows(csv, results);
      csv.flush();
      if (!csv) throw sdpo::FileError(a.csv, "--csv: writing failed");
    }
    if (!a.images.empty()) {
      // (seeds x prompts) -> rows = prompts, columns = seeds.
      const at::Tensor grid = images.view({a.seeds, n_prompts, images.size(1), images.size(2), images.size(3)})
                                  .transpose(0, 1)
                                  .flatten(0, 1);
      sdpo::png_write(
          (fs::path(a.images) / ("steps_" + std::to_string(n) + ".png")).string(),
          sdpo::image_grid(grid, a.seeds, 2, 2));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const tg::StepsSummary row = tg::summarize(results).front();
    std::cerr << "[toy_geneval] " << n << " steps: " << results.size() << " images in " << std::fixed
              << std::setprecision(1) << seconds << " s, overall " << std::setprecision(3) << row.overall
              << std::defaultfloat << "\n";
    all.insert(all.end(), results.begin(), results.end());
  }
  std::cout << tg::format_table(tg::summarize(all));
  if (!a.csv.empty()) std::cout << "\nper-image results: " << a.csv << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::cout << kUsage;
    return 0;
  }
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  Arguments a;
  try {
    a = parse_arguments(argc, argv);
  } catch (const po::error& e) {
    std::cerr << "sdpo_toy_geneval: " << e.what() << "\n(see sdpo_toy_geneval --help)\n";
    return 2;
  } catch (const UsageError& e) {
    std::cerr << "sdpo_toy_geneval: " << e.what() << "\n(see sdpo_toy_geneval --help)\n";
    return 2;
  }
  try {
    return run(a);
  } catch (const UsageError& e) {
    std::cerr << "sdpo_toy_geneval: " << e.what() << "\n(see sdpo_toy_geneval --help)\n";
    return 2;
  } catch (const sdpo::Error& e) {
    std::cerr << "sdpo_toy_geneval: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "sdpo_toy_geneval: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "sdpo_toy_geneval: error: " << e.what() << "\n";
    return 1;
  }
}

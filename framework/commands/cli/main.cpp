// The `sdpo` command line: plugins, train, experiment, sample, pretrain, analyze, bench.
#include <ATen/ATen.h>

#include <algorithm>
#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

#include "sdpo/commands/bench.h"
#include "sdpo/commands/dense_reward_analysis_driver.h"
#include "sdpo/commands/experiment.h"
#include "sdpo/commands/pretrain.h"
#include "sdpo/core/error.h"
#include "sdpo/core/model.h"
#include "sdpo/core/plugin.h"
#include "sdpo/distributed/launch.h"
#include "sdpo/train/checkpoint.h"
#include "sdpo/train/components.h"
#include "sdpo/train/evaluation.h"
#include "sdpo/train/image_io.h"
#include "sdpo/train/interrupt.h"
#include "sdpo/train/run_folder.h"
#include "sdpo/train/sampling.h"
#include "sdpo/train/threads.h"
#include "sdpo/train/trainer.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

const char* kUsage = R"(sdpo: RL fine-tuning of few-step diffusion models (SDPO, DDPO, REBEL, D3PO)

usage: sdpo <command> [options]

commands:
  train MANIFEST [--output DIR] [--resume | --overwrite] [--set json.path=value ...]
        train with the manifest's algorithm; writes DIR (default <output.dir>/<name>) with
        run.h5, manifest.json, checkpoints/epoch_<k>/ and samples_epoch_<k>.png. --resume
        continues DIR from its last checkpoint exactly as if it had never stopped (the manifest
        may change only train.epochs, output.progress, output.dir, name and description);
        a DIR that holds a run is refused without --resume or --overwrite (replace it), and
        one that another process is writing is refused always (DIR/.sdpo.lock names it)
  launch --nproc N [--port P] [--timeout S] [--grace S] [--log-dir DIR] [--oversubscribe] MANIFEST
         [train options]
        data parallel on this machine: start N processes of `sdpo train MANIFEST [train options]`
        as ranks 0..N-1 (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set; a free port
        unless --port). Each rank samples its own prompts; rewards are gathered and gradients
        all-reduced through c10d (Gloo on CPU, NCCL on CUDA); rank 0 writes the run folder.
        Output lines are prefixed [rank r] (or go to DIR/rank_<r>.log). If a rank fails, the
        others stop (terminated after --grace seconds, default 10); --timeout bounds every
        collective (SDPO_DIST_TIMEOUT, default 300). torchrun and srun work too: docs/distributed.md
  experiment EXPERIMENT [--dry-run] [--only PATTERN] [--output DIR] [--set json.path=value ...]
        expand an experiment manifest (a base run manifest x named variants x a grid) and train
        every run that is not complete, one after the other, each in DIR/<run name> (DIR
        default: the experiment's output.dir); an interrupted run resumes from its last
        checkpoint. Writes DIR/index.json (every run, its settings and state). --dry-run lists
        the runs, their state and estimated cost and runs nothing; --only trains just the runs
        whose name matches PATTERN (a glob with * ? [..], else a substring); --set applies to
        every run. Exits 1 when a run failed (the others still run)
  sample --checkpoint DIR|base --prompt TEXT [--prompt TEXT ...] [--steps 1,4,50]
         [--seed N] [--manifest FILE] [--out grid.png]
        sample a grid (rows: prompts, columns: step counts) from a training checkpoint
        (its run's manifest.json is used unless --manifest is given) or the base model
  pretrain MANIFEST [--set json.path=value ...]
        train the toy base model, text encoder and learned rewards (experiments/toy/pretrain.json),
        or with pretrain.method latent_consistency_distillation distill a model into a few-step
        consistency model for the lcm sampler (experiments/toy/pretrain_lcm.json), or with
        few_step_distillation into a few-step model for the ddim sampler, the toy world's
        SD-Turbo (experiments/toy/pretrain_turbo.json)
  analyze dense-rewards MANIFEST [--output DIR] [--set json.path=value ...] [--trajectories N]
        the paper's Table 3: sample N trajectories (default: one training epoch's worth), score
        every step's predicted x0 (the target) and compare every registered dense_reward
        predictor with it (cosine, L1, L2 after per-trajectory z-scoring); prints the table and
        writes DIR/dense_reward_analysis.csv and .h5 (DIR default <output.dir>/<name>)
  bench MANIFEST [--epochs N] [--output DIR] [--set json.path=value ...]
        time N training epochs (default 1, after one warm-up epoch; evaluation off) by phase
        (sampling, decoding, reward, preparation, update) and compare them with a bare libtorch
        loop doing the same model forwards and backwards on the same inputs; prints the table
        and the overhead ratios (benchmarks/README.md). DIR default: a temporary folder
  plugins [--plugin-path PATH ...]
        list every registered component (kind, name, file) and its options with defaults
  --help
        this text

Every command takes --threads N: libtorch's intra-op threads (default: SDPO_THREADS, else
OMP_NUM_THREADS, else every hardware thread; OpenBLAS keeps 1 unless OPENBLAS_NUM_THREADS is
set). `launch` gives each of its N ranks the hardware threads divided by N unless told. The count
is in run.h5's root attribute intra_op_threads.

Plugins are loaded from the build's plugin folder, then SDPO_PLUGIN_PATH (colon-separated),
then the manifest's plugin_paths.
)";

// Takes the global `--threads N` (or `--threads=N`) out of `args`, wherever it is; 0 if absent.
int take_threads_option(std::vector<std::string>& args) {
  int requested = 0;
  for (std::size_t i = 0; i < args.size();) {
    std::string value;
    if (args[i] == "--threads") {
      if (i + 1 >= args.size()) throw po::error("--threads needs a value");
      value = args[i + 1];
      args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
    } else if (args[i].rfind("--threads=", 0) == 0) {
      value = args[i].substr(10);
      args.erase(args.begin() + static_cast<long>(i));
    } else {
      ++i;
      continue;
    }
    requested = sdpo::parse_thread_count(value, "--threads");
  }
  return requested;
}

// --output DIR / --out FILE: given, it must name something ("" would silently mean the default).
po::typed_value<std::string>* path_value(std::string* target, const char* option) {
  return po::value(target)->notifier([option](const std::string& v) {
    if (v.empty()) throw sdpo::Error(std::string("--") + option + " must name a path, got an empty string");
  });
}

std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

// Short human form of a default value: 0.99 rather than JSON's 9.9E-1.
std::string show(const boost::json::value& v) {
  if (v.is_double()) {
    std::ostringstream os;
    os << v.as_double();
    return os.str();
  }
  return boost::json::serialize(v);
}

int cmd_plugins(const std::vector<std::string>& args) {
  po::options_description d("plugins");
  d.add_options()("plugin-path", po::value<std::vector<std::string>>()->composing(), "extra plugin file or folder");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(d).run(), vm);
  std::vector<std::string> extra;
  if (vm.count("plugin-path")) extra = vm["plugin-path"].as<std::vector<std::string>>();
  sdpo::PluginLoader(sdpo::Registry::global()).load_default(extra);
  auto& reg = sdpo::Registry::global();
  std::string kind;
  for (const auto* e : reg.entries()) {
    if (e->kind != kind) {
      kind = e->kind;
      std::cout << "\n[" << kind << "]\n";
    }
    std::cout << "  " << e->name << "  -  " << e->help << "\n      file: " << e->file << "\n";
    for (const auto& o : reg.options(e->kind, e->name)) {
      std::cout << "      " << o.key << " (" << o.type;
      if (!o.default_value.is_null()) std::cout << ", default " << show(o.default_value);
      std::cout << "): " << o.help << "\n";
    }
  }
  return 0;
}

// `<command> MANIFEST [--set json.path=value ...]` plus the command's own options in `d`.
sdpo::Manifest manifest_command(const std::vector<std::string>& args, po::options_description& d) {
  std::string manifest;
  d.add_options()("manifest", po::value(&manifest)->required(), "manifest")(
      "set", po::value<std::vector<std::string>>()->composing(), "json.path=value override");
  po::positional_options_description pos;
  pos.add("manifest", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(d).positional(pos).run(), vm);
  po::notify(vm);
  std::vector<std::string> sets;
  if (vm.count("set")) sets = vm["set"].as<std::vector<std::string>>();
  return sdpo::Manifest::load(manifest, sets);
}

int cmd_train(const std::vector<std::string>& args) {
  po::options_description d("train");
  sdpo::TrainerOptions options;
  d.add_options()("output", path_value(&options.output_dir, "output"), "run folder")(
      "resume", po::bool_switch(&options.resume), "continue the run folder from its last checkpoint")(
      "overwrite", po::bool_switch(&options.overwrite), "replace the run the folder holds");
  auto manifest = manifest_command(args, d);  // fills `options` too
  sdpo::Trainer trainer(std::move(manifest), options);
  try {
    trainer.run();
  } catch (const sdpo::Interrupted& e) {
    const auto& dir = trainer.run_dir();
    std::cerr << "sdpo train: " << e.what() << ": " << dir
              << "/run.h5 holds every completed epoch, the last checkpoint is epoch "
              << sdpo::last_checkpoint_epoch(dir) << "; resume with --resume --output " << dir << "\n";
    return e.exit_status();
  }
  const char* rank = std::getenv("RANK");
  if (rank != nullptr && std::string(rank) != "0" && std::getenv("WORLD_SIZE") != nullptr &&
      std::string(std::getenv("WORLD_SIZE")) != "1") {
    return 0;  // a data-parallel rank other than 0 wrote nothing to point at
  }
  fs::path dir = trainer.run_dir();
  std::cout << "run file:     " << (dir / "run.h5").string() << "\n";
  std::cout << "samples:      " << dir.string()
            << "/samples_epoch_<k>.png (rows: prompts, columns: eval step counts)\n";
  std::cout << "checkpoints:  " << (dir / "checkpoints").string() << "\n";
  return 0;
}

int cmd_experiment(const std::vector<std::string>& args) {
  po::options_description d("experiment");
  std::string file, output;
  sdpo::ExperimentOptions options;
  d.add_options()("experiment", po::value(&file)->required(), "experiment manifest")(
      "dry-run", po::bool_switch(&options.dry_run), "list the runs and their estimated cost; run nothing")(
      "only", po::value(&options.only), "run only the runs whose name matches (glob or substring)")(
      "output", path_value(&output, "output"), "folder of the run folders and index.json")(
      "set", po::value<std::vector<std::string>>()->composing(), "json.path=value override for every run");
  po::positional_options_description pos;
  pos.add("experiment", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(d).positional(pos).run(), vm);
  po::notify(vm);
  std::vector<std::string> sets;
  if (vm.count("set")) sets = vm["set"].as<std::vector<std::string>>();
  const auto experiment = sdpo::Experiment::load(file, sets, output);
  const auto report = sdpo::run_experiment(experiment, options, std::cout);
  return report.failed > 0 ? 1 : 0;
}

int cmd_sample(const std::vector<std::string>& args) {
  po::options_description d("sample");
  std::string checkpoint, manifest_path, out = "grid.png", steps = "1,4,50";
  std::int64_t seed = 0;
  d.add_options()("checkpoint", po::value(&checkpoint)->required(), "checkpoint folder or 'base'")(
      "prompt", po::value<std::vector<std::string>>()->composing()->required(), "prompt (repeatable)")(
      "steps", po::value(&steps), "comma-separated step counts")("seed", po::value(&seed), "seed")(
      "manifest", po::value(&manifest_path), "manifest (default: the checkpoint's run manifest)")(
      "out", path_value(&out, "out"), "output PNG")(
      "set", po::value<std::vector<std::string>>()->composing(), "override");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(d).run(), vm);
  po::notify(vm);
  if (checkpoint != "base" && !fs::is_directory(checkpoint)) {
    throw sdpo::FileError(
        checkpoint, fs::exists(checkpoint)
                        ? "--checkpoint expects a checkpoint folder (RUN/checkpoints/epoch_<k>), not a file"
                        : "--checkpoint: no such folder (expected RUN/checkpoints/epoch_<k>, or 'base')");
  }
  if (manifest_path.empty()) {
    if (checkpoint == "base") throw sdpo::Error("sample: --checkpoint base needs --manifest");
    manifest_path = (fs::path(checkpoint).parent_path().parent_path() / "manifest.json").string();
  }
  std::vector<std::string> sets;
  if (vm.count("set")) sets = vm["set"].as<std::vector<std::string>>();
  auto m = sdpo::Manifest::load(manifest_path, sets);
  auto c = sdpo::build_components(m, sdpo::ComponentSet::kSampling);
  if (checkpoint != "base") sdpo::checkpoint_load(checkpoint, *c.model, nullptr, nullptr, nullptr);
  for (const auto& [key, w] : c.model->state_dict()) {
    if (w.is_floating_point() && !at::isfinite(w).all().item<bool>()) {
      throw sdpo::Error(
          "sample: the model's weight '" + key + "' holds NaN or Inf (" +
          (checkpoint == "base" ? "the base model" : "checkpoint " + checkpoint) + "): nothing to sample from");
    }
  }
  auto prompts = vm["prompt"].as<std::vector<std::string>>();
  std::vector<std::int64_t> seeds;
  for (std::size_t i = 0; i < prompts.size(); ++i) seeds.push_back(seed + static_cast<std::int64_t>(i));
  std::vector<at::Tensor> columns;
  std::vector<std::int64_t> step_list;
  for (const auto& s : split_csv(steps)) {
    std::int64_t n = 0;
    try {
      n = std::stoll(s);
    } catch (const std::exception&) {
      throw sdpo::Error("sample: --steps expects comma-separated integers, got '" + steps + "'");
    }
    step_list.push_back(n);
    const c10::Device device(m.device);
    auto images = sdpo::generate_images(c, prompts, seeds, n, device, m.sample.forward_batch).cpu();
    if (!at::isfinite(images).all().item<bool>()) {
      throw sdpo::Error(
          "sample: model '" + m.model.name + "' and decoder '" + m.decoder.name + "' produced NaN or Inf images at " +
          std::to_string(n) + " steps");
    }
    columns.push_back(images);
  }
  auto grid = sdpo::image_grid(at::stack(columns, 1).flatten(0, 1), static_cast<std::int64_t>(columns.size()), 2, 2);
  sdpo::png_write(out, grid);
  std::cout << "wrote " << out << " (rows: prompts, columns: " << steps << " steps)\n";
  return 0;
}

int cmd_pretrain(const std::vector<std::string>& args) {
  po::options_description d("pretrain");
  auto m = manifest_command(args, d);
  sdpo::load_plugins(m);
  sdpo::run_pretrain(m, std::cout);
  return 0;
}

int cmd_bench(const std::vector<std::string>& args) {
  po::options_description d("bench");
  sdpo::BenchOptions o;
  d.add_options()("epochs", po::value(&o.epochs), "timed epochs (after one warm-up epoch)")(
      "output", path_value(&o.output_dir, "output"), "run folder (default: a temporary folder, removed)");
  auto manifest = manifest_command(args, d);
  std::cout << sdpo::format_bench_report(sdpo::run_bench(manifest, o));
  return 0;
}

int cmd_analyze(const std::vector<std::string>& args) {
  if (args.empty() || args.front() != "dense-rewards") {
    throw sdpo::Error("analyze: expected an analysis name; known: dense-rewards (see sdpo --help)");
  }
  po::options_description d("analyze dense-rewards");
  sdpo::DenseRewardAnalysisOptions o;
  d.add_options()("output", path_value(&o.output_dir, "output"), "folder for the CSV and HDF5 files")(
      "trajectories", po::value(&o.trajectories), "trajectories to sample (0: one training epoch's worth)");
  auto manifest = manifest_command(std::vector<std::string>(args.begin() + 1, args.end()), d);
  auto a = sdpo::analyze_dense_rewards(manifest, o);
  std::cout << sdpo::format_dense_reward_analysis(a) << "\n";
  std::cout << "table:  " << a.csv_path << "\n";
  std::cout << "hdf5:   " << a.h5_path << "\n";
  return 0;
}

// `launch` parses its own options up to the manifest; everything after it goes to `train`.
int cmd_launch(const std::vector<std::string>& args, const sdpo::ThreadSettings& threads) {
  sdpo::LaunchOptions o;
  o.nproc = 0;
  bool oversubscribe = false;
  double nproc = 0;
  std::size_t i = 0;
  auto value = [&](const std::string& name) -> std::string {
    if (i + 1 >= args.size()) throw po::error("launch: " + name + " needs a value");
    return args[++i];
  };
  auto number = [&](const std::string& name) {
    const std::string v = value(name);
    try {
      std::size_t used = 0;
      const double x = std::stod(v, &used);
      if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    throw po::error("launch: " + name + " expects a number, got '" + v + "'");
  };
  for (; i < args.size() && args[i].rfind("--", 0) == 0; ++i) {
    const auto& a = args[i];
    if (a == "--nproc") {
      nproc = number(a);
    } else if (a == "--oversubscribe") {
      oversubscribe = true;
    } else if (a == "--port") {
      o.master_port = static_cast<int>(number(a));
    } else if (a == "--timeout") {
      o.timeout_seconds = number(a);
    } else if (a == "--grace") {
      o.grace_seconds = number(a);
    } else if (a == "--log-dir") {
      o.log_dir = value(a);
    } else {
      throw po::error("launch: unknown option '" + a + "' before the manifest (train options go after it)");
    }
  }
  if (!(nproc >= 1) || nproc != std::floor(nproc)) throw po::error("launch: --nproc N (an integer N >= 1) is required");
  // Ranks of one machine share its cores: beyond 4 per hardware thread each gets too little to
  // make progress (and 100000 processes would exhaust the process table first).
  const double cores = std::max(1U, std::thread::hardware_concurrency());
  const double cap = oversubscribe ? 4096 : 4 * cores;
  if (nproc > cap) {
    throw po::error(
        "launch: --nproc " + std::to_string(static_cast<long long>(std::min(nproc, 1e18))) + " is more than " +
        std::to_string(static_cast<long long>(cap)) +
        (oversubscribe ? " (the limit)" : " (4 per hardware thread here; --oversubscribe allows up to 4096)"));
  }
  o.nproc = static_cast<int>(nproc);
  // N ranks on one machine share its cores; a count the user gave is each rank's.
  o.threads_per_rank = threads.source == "hardware" ? std::max(1, threads.intra_op / o.nproc) : threads.intra_op;
  if (i >= args.size()) throw po::error("launch: a MANIFEST is required");
  o.args = {"train"};
  o.args.insert(o.args.end(), args.begin() + static_cast<long>(i), args.end());
  std::error_code ec;
  o.program = fs::read_symlink("/proc/self/exe", ec).string();
  if (ec) throw sdpo::Error("launch: cannot find this executable (/proc/self/exe): " + ec.message());
  return sdpo::launch_local(o, std::cout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" || std::string(argv[1]) == "help") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    const auto threads = sdpo::resolve_threads(take_threads_option(args), sdpo::ThreadEnvironment::current());
    sdpo::apply_threads(threads);
    if (cmd == "plugins") return cmd_plugins(args);
    // Ctrl-C and SIGTERM stop a run between batches, its files flushed (sdpo/train/interrupt.h).
    if (cmd == "train" || cmd == "experiment") sdpo::install_interrupt_handlers();
    if (cmd == "train") return cmd_train(args);
    if (cmd == "experiment") return cmd_experiment(args);
    if (cmd == "launch") return cmd_launch(args, threads);
    if (cmd == "sample") return cmd_sample(args);
    if (cmd == "pretrain") return cmd_pretrain(args);
    if (cmd == "analyze") return cmd_analyze(args);
    if (cmd == "bench") return cmd_bench(args);
    std::cerr << "sdpo: unknown command '" << cmd << "'\n\n" << kUsage;
    return 2;
  } catch (const sdpo::Interrupted& e) {
    std::cerr << "sdpo " << cmd << ": " << e.what() << "; run it again to resume\n";
    return e.exit_status();
  } catch (const po::error& e) {
    std::cerr << "sdpo " << cmd << ": " << e.what() << "\n(see sdpo --help)\n";
    return 2;
  } catch (const sdpo::Error& e) {
    std::cerr << "sdpo " << cmd << ": error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    // c10::Error (backtrace only with SDPO_DEBUG=1), std::bad_alloc ("out of memory"), the rest.
    std::cerr << "sdpo " << cmd << ": error: " << sdpo::error_message(e) << "\n";
    return 1;
  }
}

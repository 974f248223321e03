#include "sdpo/train/manifest.h"

#include <algorithm>
#include <boost/json.hpp>
#include <fstream>
#include <sstream>
#include <type_traits>

#include "sdpo/core/error.h"

namespace sdpo {
namespace json = boost::json;

namespace {

const char* kComponentKinds[] = {"model",  "text_encoder", "decoder",    "sampler",  "prompts",
                                 "reward", "dense_reward", "normalizer", "algorithm"};

bool is_component_kind(const std::string& key) {
  return std::find(std::begin(kComponentKinds), std::end(kComponentKinds), key) != std::end(kComponentKinds);
}

// Applies "a.b.c=value": objects on the way are created; value is JSON if it parses, else a string.
// Two rules for components: "<kind>.x=..." on a component given as a bare name string turns it
// into {"name": ...} first; and "<kind>.name=..." that changes the component drops the old
// component's "options" (they belong to it: quickstart's dense_reward anchor_range would be an
// unknown option of copy_1), so the new one starts from its defaults and later --set
// "<kind>.options.<key>" values apply to it.
void apply_override(json::object& root, const std::string& assignment, const std::string& file) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ManifestError(file, assignment, "--set expects json.path=value");
  }
  std::string path = assignment.substr(0, eq);
  std::string text = assignment.substr(eq + 1);
  if (path.front() == '.' || path.back() == '.' || path.find("..") != std::string::npos) {
    throw ManifestError(file, path, "--set: the JSON path has an empty key (expected e.g. train.epochs=2)");
  }
  json::value value;
  boost::system::error_code ec;
  value = json::parse(text, ec);
  if (ec) value = json::string(text);
  json::object* obj = &root;
  std::stringstream ss(path);
  std::string part, next;
  std::getline(ss, part, '.');
  const std::string top = part;
  int depth = 0;
  while (std::getline(ss, next, '.')) {
    json::value& child = (*obj)[part];
    if (child.is_null()) child = json::object();
    if (depth == 0 && child.is_string() && is_component_kind(part)) child = json::object{{"name", child.as_string()}};
    if (!child.is_object()) {
      throw ManifestError(file, path, "--set: '" + part + "' is not an object");
    }
    obj = &child.as_object();
    part = next;
    ++depth;
  }
  if (depth == 1 && part == "name" && is_component_kind(top)) {
    const json::value* old = obj->if_contains("name");
    if (!old || *old != value) obj->erase("options");
  }
  (*obj)[part] = value;
}

ComponentConfig read_component(const json::object& root, const std::string& kind, const std::string& file) {
  ComponentConfig c;
  c.kind = kind;
  c.file = file;
  c.json_path = kind + ".options";
  const json::value* v = root.if_contains(kind);
  if (!v) return c;  // absent: checked when the component is needed
  if (v->is_string()) {
    c.name = std::string(v->as_string());
    return c;
  }
  if (!v->is_object()) {
    throw ManifestError(file, kind, "expected an object {\"name\": ..., \"options\": {...}} or a name string");
  }
  for (const auto& kv : v->as_object()) {
    if (kv.key() != "name" && kv.key() != "options" && kv.key() != "path") {
      throw ManifestError(
          file, kind + "." + std::string(kv.key()), "unknown key; expected 'name', 'options' and optionally 'path'");
    }
  }
  const json::value* name = v->as_object().if_contains("name");
  if (!name || !name->is_string() || name->as_string().empty()) {
    throw ManifestError(file, kind + ".name", "expected the registry name of a " + kind + " (a string)");
  }
  c.name = std::string(name->as_string());
  if (const json::value* o = v->as_object().if_contains("options")) {
    if (!o->is_object()) throw ManifestError(file, kind + ".options", "expected an object");
    c.options = o->as_object();
  }
  // `<kind>.path` is shorthand for `<kind>.options.path` (a model folder), so that a command line
  // can point a manifest at local weights: --set model.path=/models/sd-turbo.
  if (const json::value* p = v->as_object().if_contains("path")) {
    if (!p->is_string() || p->as_string().empty()) throw ManifestError(file, kind + ".path", "expected a folder path");
    if (c.options.contains("path")) {
      throw ManifestError(file, kind + ".path", "given twice: here and in " + kind + ".options.path; keep one");
    }
    c.options["path"] = *p;
  }
  return c;
}

OptionReader section(const json::object& root, const std::string& name, const std::string& file) {
  ComponentConfig c;
  c.file = file;
  c.json_path = name;
  if (const json::value* v = root.if_contains(name)) {
    if (!v->is_object()) throw ManifestError(file, name, "expected an object");
    c.options = v->as_object();
  }
  return OptionReader(c);
}

// The top-level keys: name, device, plugin_paths (the components and sections are read below).
void read_top_level(Manifest& m) {
  const std::string& file = m.file;
  static const std::vector<std::string> known = {"name",       "device",    "plugin_paths", "model",  "text_encoder",
                                                 "decoder",    "sampler",   "prompts",      "reward", "dense_reward",
                                                 "normalizer", "algorithm", "train",        "sample", "eval",
                                                 "output",     "pretrain",  "description"};
  for (const auto& kv : m.root) {
    std::string key(kv.key());
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw ManifestError(file, key, "unknown key; expected one of: " + list);
    }
  }
  for (const char* k : {"name", "device", "description"}) {
    if (const json::value* x = m.root.if_contains(k)) {
      if (!x->is_string()) throw ManifestError(file, k, "expected a string");
    }
  }
  if (auto* x = m.root.if_contains("name")) m.name = std::string(x->as_string());
  if (auto* x = m.root.if_contains("device")) m.device = std::string(x->as_string());
  if (m.device != "cpu" && m.device.rfind("cuda", 0) != 0) {
    throw ManifestError(file, "device", "expected \"cpu\", \"cuda\" or \"cuda:<index>\", got \"" + m.device + "\"");
  }
  if (auto* x = m.root.if_contains("plugin_paths")) {
    if (!x->is_array()) throw ManifestError(file, "plugin_paths", "expected an array of paths");
    for (const auto& p : x->as_array()) {
      if (!p.is_string()) throw ManifestError(file, "plugin_paths", "expected an array of path strings");
      m.plugin_paths.emplace_back(p.as_string());
    }
  }
  if (m.name.empty()) {  // the file's name without its extension
    auto slash = file.find_last_of('/');
    std::string base = slash == std::string::npos ? file : file.substr(slash + 1);
    m.name = base.substr(0, base.rfind('.'));
  }
}

}  // namespace

Manifest Manifest::load(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path, "cannot open manifest (missing or unreadable)");
  json::value v = json_parse_file(path);
  return parse(json::serialize(v), path, overrides);
}

TrainOptions TrainOptions::read(OptionReader& r) {
  TrainOptions t;
  t.epochs = r.integer("epochs", t.epochs, 0, 1000000, "training epochs");
  t.batch_size = r.integer("batch_size", t.batch_size, 1, 1 << 20, "prompts per sampling batch (B_s)");
  t.batches_per_epoch =
      r.integer("batches_per_epoch", t.batches_per_epoch, 1, 1 << 20, "sampling batches per epoch (n_b)");
  t.train_batch_size =
      r.integer("train_batch_size", t.train_batch_size, 1, 1 << 20, "trajectories or pairs per micro-batch (B_t)");
  t.seed = r.integer("seed", t.seed, 0, INT64_MAX, "random seed");
  t.checkpoint_every = r.integer("checkpoint_every", t.checkpoint_every, 1, 1 << 20, "epochs between checkpoints");
  t.update_schedule = r.string(
      "update_schedule", t.update_schedule,
      "epoch: sample all batches_per_epoch batches, then one algorithm update over "
      "the epoch's buffer; per_batch (RLCM's loop): sample a batch, normalize it, "
      "update on it, batch by batch (the same as epoch at one batch). Under per_batch "
      "the train row's algorithm metrics are means over the epoch's batches (updates: "
      "the running count after the last), the counters, rewards and phase times cover "
      "the whole epoch",
      {"epoch", "per_batch"});
  auto& o = t.optimizer;
  o.name = r.string("optimizer", o.name, "optimizer", {"adamw", "adam"});
  o.learning_rate = r.number("learning_rate", o.learning_rate, 0.0, 10.0, "learning rate");
  o.beta1 = r.number("beta1", o.beta1, 0.0, 0.999999, "Adam beta1");
  o.beta2 = r.number("beta2", o.beta2, 0.0, 0.999999999, "Adam beta2");
  o.eps = r.number("eps", o.eps, 0.0, 1.0, "Adam epsilon");
  o.weight_decay = r.number("weight_decay", o.weight_decay, 0.0, 10.0, "weight decay");
  o.max_grad_norm = r.number("max_grad_norm", o.max_grad_norm, 0.0, 1e9, "gradient-norm clip (0: none)");
  o.gradient_accumulation =
      r.integer("gradient_accumulation", o.gradient_accumulation, 1, 1 << 20, "micro-batches per update (G_acc)");
  t.loss_scaling = r.string(
      "loss_scaling", t.loss_scaling,
      "dynamic loss scaling (GradScaler's): auto = on when the trained path runs in float16, "
      "off for float32 and bfloat16; on; off",
      {"auto", "on", "off"});
  auto& ls = o.loss_scaling;
  ls.init_scale = r.number("loss_scale_init", ls.init_scale, 1.0, 1e30, "initial loss scale (2^16)");
  ls.growth_interval = r.integer(
      "loss_scale_growth_interval", ls.growth_interval, 1, INT64_MAX,
      "clean steps in a row after which the loss scale doubles");
  return t;
}

SampleOptions SampleOptions::read(OptionReader& r, const json::value* steps) {
  SampleOptions o;
  // sample.steps: an integer T, or a list of them (mixed-step training, e.g. Fig. 7): each
  // epoch then draws its T from the list (the trainer's generator; see SampleOptions).
  if (steps && steps->is_array()) {
    o.step_choices = r.integers(
        "steps", {}, 1, 1000,
        "denoising steps per training trajectory (T), or a "
        "list of them drawn from per epoch");
    o.steps = *std::max_element(o.step_choices.begin(), o.step_choices.end());
  } else {
    o.steps = r.integer("steps", o.steps, 1, 1000, "denoising steps per training trajectory (T)");
  }
  o.guidance = r.number("guidance", o.guidance, 0.0, 100.0, "classifier-free guidance scale");
  o.forward_batch = r.integer(
      "forward_batch", o.forward_batch, 0, 1 << 20,
      "latents per model call in sampling and evaluation (0: the whole batch in one call)");
  return o;
}

EvalOptions EvalOptions::read(OptionReader& r) {
  EvalOptions e;
  e.steps = r.integers("steps", e.steps, 1, 1000, "sampling step counts evaluated");
  e.every = r.integer("every", e.every, 0, 1 << 20, "epochs between evaluations (0: never)");
  e.seeds = r.integer("seeds", e.seeds, 1, 1 << 16, "images per evaluation prompt");
  e.seed = r.integer("seed", e.seed, 0, INT64_MAX, "first evaluation seed");
  e.prompt_set = r.string("prompt_set", e.prompt_set, "evaluation prompts", {"eval", "train", "unseen"});
  e.max_prompts = r.integer("max_prompts", e.max_prompts, 0, 1 << 20, "prompts evaluated (0: all)");
  return e;
}

OutputOptions OutputOptions::read(OptionReader& r) {
  OutputOptions o;
  o.dir = r.string("dir", o.dir, "folder of run folders");
  o.save_trajectories = r.boolean("save_trajectories", o.save_trajectories, "write /trajectories/epoch_<k>");
  o.save_latents = r.boolean("save_latents", o.save_latents, "also write latents and predicted x0");
  o.progress = r.boolean("progress", o.progress, "progress bar on stderr");
  o.grid_prompts = r.integer("grid_prompts", o.grid_prompts, 1, 1024, "prompts in the sample grid");
  return o;
}

PretrainOptions PretrainOptions::read(OptionReader& r) {
  PretrainOptions p;
  p.method = r.string(
      "method", p.method,
      "denoising: train the base model and text encoder from random init; "
      "latent_consistency_distillation: distill the model's checkpoint into a few-step "
      "consistency model (for the lcm sampler); few_step_distillation: distill it into a "
      "few-step model for the ddim sampler (a toy SD-Turbo)",
      {"denoising", "latent_consistency_distillation", "few_step_distillation"});
  p.steps = r.integer("steps", p.steps, 1, 100000000, "optimizer steps for the base model");
  p.batch_size = r.integer("batch_size", p.batch_size, 1, 1 << 20, "images per step");
  p.learning_rate = r.number("learning_rate", p.learning_rate, 0.0, 10.0, "AdamW learning rate");
  p.seed = r.integer("seed", p.seed, 0, INT64_MAX, "random seed");
  p.model_out = r.string("model_out", p.model_out, "safetensors file for the model");
  p.text_encoder_out = r.string("text_encoder_out", p.text_encoder_out, "safetensors file for the text encoder");
  p.reward_steps = r.integer("reward_steps", p.reward_steps, 0, 100000000, "steps to fit learned rewards");
  p.reward_batch_size = r.integer("reward_batch_size", p.reward_batch_size, 1, 1 << 20, "batch to fit learned rewards");
  p.reward_learning_rate =
      r.number("reward_learning_rate", p.reward_learning_rate, 0.0, 10.0, "lr to fit learned rewards");
  p.original_inference_steps = r.integer(
      "original_inference_steps", p.original_inference_steps, 1, 100000,
      "consistency distillation: the teacher's DDIM schedule length N "
      "(each teacher step skips num_train_timesteps / N)");
  p.ema_decay =
      r.number("ema_decay", p.ema_decay, 0.0, 1.0, "consistency distillation: EMA decay of the target network");
  p.consistency_loss = r.string(
      "consistency_loss", p.consistency_loss, "consistency distillation: distance between student and target outputs",
      {"l2", "huber"});
  p.huber_c = r.number("huber_c", p.huber_c, 1e-12, 1e6, "consistency distillation: the pseudo-Huber constant c");
  p.timestep_scaling = r.number(
      "timestep_scaling", p.timestep_scaling, 1e-12, 1e6,
      "consistency distillation: s = t * timestep_scaling in c_skip, c_out "
      "(must match the lcm sampler's)");
  p.teacher_steps = r.integer(
      "teacher_steps", p.teacher_steps, 1, 1000,
      "few-step distillation: length of the teacher's trailing DDIM (eta 0) trajectories");
  p.distill_steps = r.integers(
      "distill_steps", p.distill_steps, 1, 1000,
      "few-step distillation: student step counts whose trailing timesteps are "
      "distilled (each must divide teacher_steps' grid: its timesteps on the teacher's)");
  p.distill_batch_size = r.integer(
      "distill_batch_size", p.distill_batch_size, 1, 1 << 20, "few-step distillation: teacher trajectories per step");
  p.denoise_weight = r.number(
      "denoise_weight", p.denoise_weight, 0.0, 1e6,
      "few-step distillation: weight of the denoising loss on labelled images");
  p.prediction_type = r.string(
      "prediction_type", p.prediction_type,
      "few-step distillation: what the student predicts, set as its model's "
      "prediction_type option (empty: the same as the teacher)",
      {"", "epsilon", "v_prediction", "sample"});
  return p;
}

namespace {

// A section through its options' reader, which then rejects the keys it did not read.
template <class Options>
Options read_section(const json::object& root, const char* name, const std::string& file) {
  OptionReader r = section(root, name, file);
  Options o;
  if constexpr (std::is_same_v<Options, SampleOptions>) {
    const json::value* steps = nullptr;
    if (const auto* sec = root.if_contains(name); sec && sec->is_object())
      steps = sec->as_object().if_contains("steps");
    o = SampleOptions::read(r, steps);
  } else {
    o = Options::read(r);
  }
  r.finish();
  return o;
}

// pretrain: plain options, and `rewards`, an array of reward components with their own options.
PretrainOptions read_pretrain(const json::object& root, const std::string& file) {
  json::object pre;
  if (const json::value* v = root.if_contains("pretrain")) {
    if (!v->is_object()) throw ManifestError(file, "pretrain", "expected an object");
    pre = v->as_object();
  }
  json::value rewards;
  if (auto* x = pre.if_contains("rewards")) {
    rewards = *x;
    pre.erase("rewards");
  }
  PretrainOptions p = read_section<PretrainOptions>(json::object{{"pretrain", pre}}, "pretrain", file);
  if (rewards.is_null()) return p;
  if (!rewards.is_array()) throw ManifestError(file, "pretrain.rewards", "expected an array of reward components");
  std::size_t i = 0;
  for (const auto& e : rewards.as_array()) {
    json::object tmp{{"reward", e}};
    ComponentConfig c = read_component(tmp, "reward", file);
    c.json_path = "pretrain.rewards[" + std::to_string(i++) + "].options";
    p.rewards.push_back(c);
  }
  return p;
}

}  // namespace

Manifest Manifest::parse(const std::string& text, const std::string& file, const std::vector<std::string>& overrides) {
  json::parse_options opt;
  opt.allow_comments = true;
  opt.allow_trailing_commas = true;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec, {}, opt);
  if (ec) throw ManifestError(file, "", "invalid JSON: " + ec.message());
  if (!v.is_object()) throw ManifestError(file, "", "expected a JSON object at the top level");
  Manifest m;
  m.file = file;
  m.root = v.as_object();
  for (const auto& o : overrides) apply_override(m.root, o, file);
  read_top_level(m);

  ComponentConfig* slots[] = {&m.model,  &m.text_encoder, &m.decoder,    &m.sampler,  &m.prompts,
                              &m.reward, &m.dense_reward, &m.normalizer, &m.algorithm};
  for (std::size_t i = 0; i < 9; ++i) *slots[i] = read_component(m.root, kComponentKinds[i], file);

  m.train = read_section<TrainOptions>(m.root, "train", file);
  m.sample = read_section<SampleOptions>(m.root, "sample", file);
  if (m.sample.guidance <= 0.0) {
    throw ManifestError(file, "sample.guidance", "expected a scale > 0 (1: no classifier-free guidance)");
  }
  m.eval = read_section<EvalOptions>(m.root, "eval", file);
  m.output = read_section<OutputOptions>(m.root, "output", file);
  m.pretrain = read_pretrain(m.root, file);
  return m;
}

std::string Manifest::text() const { return json_pretty(root); }

}  // namespace sdpo

// core/src/options.cpp — the core's sections parsed once into typed options, the checks that
// span sections, and the learning-rate schedule.
#include "tessera/core/options.hpp"

#include <tessera/abi.h>

#include <cmath>
#include <filesystem>

namespace tessera {

ExperimentOptions ExperimentOptions::from(Section s) {
  ExperimentOptions o;
  o.name = s.get_string("name");
  o.device = s.get_string("device");
  o.output_dir = s.get_string("output_dir");
  if (o.output_dir.empty()) o.output_dir = "runs/" + o.name;
  o.log_level = s.get_string("log_level");
  o.on_existing = s.get_string("on_existing");
  o.seed = static_cast<uint64_t>(s.get_int("seed"));
  o.threads = s.get_int("threads");
  // Relative directories written in a config file are the file's: resolved against its
  // directory (from --set they are the shell's, against the working directory).
  const SourcePos where = s.where("plugin_path");
  for (const std::string& dir : s.get_strings("plugin_path")) {
    std::filesystem::path p(dir);
    if (p.is_relative() && where.line > 0 && !where.file.empty())
      p = std::filesystem::path(where.file).parent_path() / p;
    o.plugin_path.push_back(p.lexically_normal().string());
  }
  o.section = std::move(s);
  return o;
}

DataOptions DataOptions::from(Section s) {
  DataOptions o;
  o.dataset = s.get_string("dataset");
  o.train_split = s.get_string("train_split");
  o.eval_split = s.get_string("eval_split");
  o.batch_size = s.get_int("batch_size");
  o.eval_batch_size = s.get_int("eval_batch_size");
  o.train_limit = s.get_int("train_limit");
  o.test_limit = s.get_int("test_limit");
  o.workers = s.get_int("workers");
  o.prefetch = s.get_int("prefetch");
  o.shuffle = s.get_bool("shuffle");
  o.drop_last = s.get_bool("drop_last");
  o.section = std::move(s);
  return o;
}

OptimizerOptions OptimizerOptions::from(Section s) {
  OptimizerOptions o;
  o.name = s.get_string("name");
  o.algorithm = o.name == "sgd" ? TSR_OPTIM_SGD : o.name == "lion" ? TSR_OPTIM_LION : TSR_OPTIM_ADAMW;
  o.lr = s.get_float("lr");
  o.beta1 = s.get_float("beta1");
  o.beta2 = s.get_float("beta2");
  o.eps = s.get_float("eps");
  o.weight_decay = s.get_float("weight_decay");
  o.momentum = s.get_float("momentum");
  o.nesterov = s.get_bool("nesterov");
  if (o.algorithm == TSR_OPTIM_LION) {  // Lion's own rate and betas, so switching the name is enough
    o.lr *= s.get_float("lion_lr_ratio");
    o.beta1 = s.get_float("lion_beta1");
    o.beta2 = s.get_float("lion_beta2");
  }
  o.section = std::move(s);
  return o;
}

ScheduleOptions ScheduleOptions::from(Section s) {
  ScheduleOptions o;
  o.warmup_steps = s.get_int("warmup_steps");
  o.decay = s.get_string("decay");
  o.min_lr_ratio = s.get_float("min_lr_ratio");
  o.section = std::move(s);
  return o;
}

TrainOptions TrainOptions::from(Section s) {
  TrainOptions o;
  o.epochs = s.get_int("epochs");
  o.max_steps = s.get_int("max_steps");
  o.grad_accum = s.get_int("grad_accum");
  o.log_every = s.get_int("log_every");
  o.clip_grad_norm = s.get_float("clip_grad_norm");
  o.peak_tflops = s.get_float("peak_tflops");
  o.save_model = s.get_bool("save_model");
  o.memory_limit_mib = s.get_int("memory_limit_mib");
  o.skip_nonfinite = s.get_string("nonfinite") == "skip";
  o.section = std::move(s);
  return o;
}

EvalOptions EvalOptions::from(Section s) {
  EvalOptions o;
  o.enabled = s.get_bool("enabled");
  o.loss = s.get_bool("loss");
  o.every_steps = s.get_int("every_steps");
  o.logits = s.get_string("logits");
  o.label = s.get_string("label");
  o.zero_shot_image = s.get_string("zero_shot_image");
  o.zero_shot_text = s.get_string("zero_shot_text");
  o.zero_shot_audio = s.get_string("zero_shot_audio");
  for (const std::string& pair : s.get_strings("retrieval")) {
    const size_t colon = pair.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == pair.size() || pair.find(':', colon + 1) != std::string::npos ||
        pair.substr(0, colon) == pair.substr(colon + 1))
      throw ConfigError(s.where("retrieval").str() + ": each entry must be \"A:B\" with two different batch tensors "
                        "(embeddings of the same examples, e.g. \"image_emb:text_emb\"), got \"" + pair.substr(0, 64) + "\"");
    o.retrieval.emplace_back(pair.substr(0, colon), pair.substr(colon + 1));
  }
  o.section = std::move(s);
  return o;
}

CheckpointOptions CheckpointOptions::from(Section s) {
  CheckpointOptions o;
  o.every_steps = s.get_int("every_steps");
  o.keep = s.get_int("keep");
  o.dir = s.get_string("dir");
  o.resume = s.get_string("resume");
  o.section = std::move(s);
  return o;
}

DistOptions DistOptions::from(Section s) {
  DistOptions o;
  o.zero_stage = s.get_int("zero_stage");
  o.timeout_s = s.get_int("timeout_s");
  o.deterministic_groups = s.get_int("deterministic_groups");
  o.bucket_mb = s.get_float("bucket_mb");
  o.section = std::move(s);
  return o;
}

MetricsOptions MetricsOptions::from(Section s) {
  MetricsOptions o;
  o.csv = s.get_bool("csv");
  o.tensorboard = s.get_bool("tensorboard");
  o.tensorboard_dir = s.get_string("tensorboard_dir");
  o.section = std::move(s);
  return o;
}

CoreOptions CoreOptions::resolve(const Config& config, const DistEnv& env) {
  config.check_sections(
      {"experiment", "data", "encoder", "loss", "precision", "optimizer", "schedule", "train", "eval", "checkpoint", "dist", "metrics"});
  auto section = [&](const char* name, const Schema& schema) {
    return config.resolve(config.table(name), schema, std::string("[") + name + "]");
  };
  // [data] also holds the dataset plugin's keys: TrainingData checks them against its schema.
  CoreOptions o;
  o.experiment = ExperimentOptions::from(section("experiment", experiment_schema()));
  o.data = DataOptions::from(config.resolve(config.table("data"), data_schema(), "[data]", Config::Unknown::Ignore));
  o.optimizer = OptimizerOptions::from(section("optimizer", optimizer_schema()));
  o.schedule = ScheduleOptions::from(section("schedule", schedule_schema()));
  o.train = TrainOptions::from(section("train", train_schema()));
  o.eval = EvalOptions::from(section("eval", eval_schema()));
  o.metrics = MetricsOptions::from(section("metrics", metrics_schema()));
  o.checkpoint = CheckpointOptions::from(section("checkpoint", checkpoint_schema()));
  o.dist = DistOptions::from(section("dist", dist_schema()));

  if (const int64_t groups = o.dist.deterministic_groups; groups > 0) {
    auto refuse = [&](const std::string& why) {
      throw ConfigError(o.dist.section.where("deterministic_groups").str() + ": deterministic_groups = " +
                        std::to_string(groups) + " " + why);
    };
    auto pow2 = [](int64_t x) { return x > 0 && (x & (x - 1)) == 0; };
    if (!pow2(groups)) refuse("must be a power of two (the groups are summed as a binary tree)");
    if (!pow2(env.world_size) || groups % env.world_size != 0)
      refuse("needs a power-of-two WORLD_SIZE that divides it (WORLD_SIZE=" + std::to_string(env.world_size) + ")");
    if (o.data.batch_size % groups != 0) refuse("must divide [data] batch_size " + std::to_string(o.data.batch_size));
    if (o.train.grad_accum != 1) refuse("needs [train] grad_accum = 1 (the groups are the accumulation)");
    if (o.dist.zero_stage >= 2) refuse("needs whole gradients on every rank: use zero_stage 0 or 1");
  }
  if (env.world_size > 1 && o.data.batch_size % env.world_size != 0)
    throw ConfigError(o.data.section.where("batch_size").str() + ": batch_size " + std::to_string(o.data.batch_size) +
                      " (the global batch) must divide evenly over WORLD_SIZE=" + std::to_string(env.world_size) +
                      " ranks");
  return o;
}

double scheduled_lr(const OptimizerOptions& opt, const ScheduleOptions& sched, int64_t step, int64_t total_steps) {
  const double peak = opt.lr;
  const int64_t warmup = sched.warmup_steps;
  if (step <= warmup) return peak * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(warmup, 1));
  if (sched.decay == "constant" || total_steps <= warmup) return peak;
  const double floor = peak * sched.min_lr_ratio;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total_steps - warmup));
  if (sched.decay == "linear") return floor + (peak - floor) * (1.0 - progress);
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace tessera

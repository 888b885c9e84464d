// tessera/core/options.hpp — the core's own config sections, each with its schema and parsed
// ONCE into a typed struct (no string-key lookups during training), plus the checks that span
// sections (batch vs world size, deterministic reduction's requirements).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/comm.hpp"
#include "tessera/core/config.hpp"

namespace tessera {

// The schemas of the core's sections (one per component, as DESIGN.md asks).
const Schema& experiment_schema();
const Schema& data_schema();
const Schema& optimizer_schema();
const Schema& schedule_schema();
const Schema& train_schema();
const Schema& eval_schema();
const Schema& metrics_schema();
const Schema& checkpoint_schema();
const Schema& dist_schema();
const Schema& encoder_slot_schema();    // keys of [[encoder]] the core owns (plugin, name)
const Schema& loss_slot_schema();       // keys of [[loss]] the core owns (plugin, name, weight, gather)
const Schema& precision_slot_schema();  // keys of [precision] the core owns (plugin)

// Each struct keeps its resolved Section for messages that name the key (`where`).
struct ExperimentOptions {
  Section section;
  std::string name, device, output_dir, log_level;
  std::string on_existing = "refuse";  // refuse | overwrite | suffix: see the schema
  uint64_t seed = 0;
  int64_t threads = 0;
  std::vector<std::string> plugin_path;
  static ExperimentOptions from(Section s);
};

// The core's keys of [data]; the dataset plugin's own keys in the same table are validated
// against its schema when the dataset is built (TrainingData).
struct DataOptions {
  Section section;
  std::string dataset, train_split, eval_split;
  int64_t batch_size = 0, eval_batch_size = 0, train_limit = 0, test_limit = 0, workers = 0, prefetch = 4;
  bool shuffle = true, drop_last = false;
  static DataOptions from(Section s);
};

struct OptimizerOptions {
  Section section;
  std::string name;  // "adamw" | "sgd" | "lion"
  int32_t algorithm = 0;  // TSR_OPTIM_* of name
  // lr, beta1, beta2: for Lion already its own (lr x lion_lr_ratio, lion_beta1, lion_beta2).
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0, momentum = 0;
  bool nesterov = false;
  static OptimizerOptions from(Section s);
};

struct ScheduleOptions {
  Section section;
  int64_t warmup_steps = 0;
  std::string decay;  // "cosine" | "linear" | "constant"
  double min_lr_ratio = 0;
  static ScheduleOptions from(Section s);
};

struct TrainOptions {
  Section section;
  int64_t epochs = 1, max_steps = 0, grad_accum = 1, log_every = 50;
  double clip_grad_norm = 0;
  double peak_tflops = 0;  // 0 = from the device table
  int64_t memory_limit_mib = 0;  // 0 = the machine's less a margin (MemoryGuard)
  bool save_model = true;
  bool skip_nonfinite = false;  // nonfinite = "skip" (else "error")
  static TrainOptions from(Section s);
};

struct EvalOptions {
  Section section;
  bool enabled = true;
  bool loss = false;        // evaluate the [[loss]] terms (and perplexity)
  int64_t every_steps = 0;  // 0 = after every epoch
  std::string logits, label, zero_shot_image, zero_shot_text, zero_shot_audio;
  // Retrieval pairs "query:candidate": row i of one tensor's match is row i of the other.
  std::vector<std::pair<std::string, std::string>> retrieval;
  static EvalOptions from(Section s);
};

struct CheckpointOptions {
  Section section;
  int64_t every_steps = 0, keep = 2;
  std::string dir, resume;
  static CheckpointOptions from(Section s);
};

struct DistOptions {
  Section section;
  int64_t zero_stage = 0, timeout_s = 60, deterministic_groups = 0;
  double bucket_mb = 25;
  static DistOptions from(Section s);
};

// Every core section of one experiment, resolved and cross-checked against the world size.
struct MetricsOptions {
  Section section;
  bool csv = true, tensorboard = false;
  std::string tensorboard_dir;  // empty = <output_dir>/tensorboard
  static MetricsOptions from(Section s);
};

struct CoreOptions {
  ExperimentOptions experiment;
  DataOptions data;
  OptimizerOptions optimizer;
  ScheduleOptions schedule;
  TrainOptions train;
  EvalOptions eval;
  CheckpointOptions checkpoint;
  DistOptions dist;
  MetricsOptions metrics;
  // Throws ConfigError naming the file, key and the rule broken.
  static CoreOptions resolve(const Config& config, const DistEnv& env);
};

// Learning rate at optimizer step `step` (1-based): linear warmup, then cosine/linear decay
// to min_lr_ratio * lr at total_steps, or constant.
double scheduled_lr(const OptimizerOptions& opt, const ScheduleOptions& sched, int64_t step, int64_t total_steps);

}  // namespace tessera

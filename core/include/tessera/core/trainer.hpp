// tessera/core/trainer.hpp — an experiment built from a config (plugins, flat parameters,
// data, optimizer settings) and the training loop that runs it.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tessera/core/backward.hpp"
#include "tessera/core/captions.hpp"
#include "tessera/core/checkpoint.hpp"
#include "tessera/core/comm.hpp"
#include "tessera/core/reducer.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/data.hpp"
#include "tessera/core/engine.hpp"
#include "tessera/core/flat_params.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"

namespace tessera {

// The schemas of the core's own sections (one per component, as DESIGN.md asks).
const Schema& experiment_schema();
const Schema& data_schema();
const Schema& optimizer_schema();
const Schema& schedule_schema();
const Schema& train_schema();
const Schema& eval_schema();
const Schema& checkpoint_schema();
const Schema& dist_schema();
const Schema& encoder_slot_schema();    // keys of [[encoder]] the core owns (plugin, name)
const Schema& loss_slot_schema();       // keys of [[loss]] the core owns (plugin, name, weight)
const Schema& precision_slot_schema();  // keys of [precision] the core owns (plugin)

// Learning rate at optimizer step `step` (1-based): linear warmup, then cosine/linear decay
// to min_lr_ratio * lr at total_steps, or constant.
double scheduled_lr(const Section& optimizer, const Section& schedule, int64_t step, int64_t total_steps);

// Seeds the global generator for one plugin instance ("encoder.<name>", "loss.<name>") from
// the experiment seed, so each component's initial weights depend on its name only.
void seed_for_instance(uint64_t seed, const std::string& name);

// What a finished run reports.
struct TrainSummary {
  int64_t steps = 0;
  int64_t epochs = 0;
  double final_loss = 0.0;      // mean training loss over the last logging window
  double eval_accuracy = -1.0;  // last evaluation; -1 when none ran
  double zero_shot_accuracy = -1.0;
  double train_seconds = 0.0;   // training loop only (excludes building and data loading)
  int64_t skipped_steps = 0;    // steps dropped for a non-finite loss ([train] nonfinite = "skip")
  std::string output_dir;
};

// One evaluation over the test split; -1 where not configured.
struct EvalResult {
  double accuracy = -1.0;            // classifier: argmax of [eval] logits
  double loss = -1.0;                // its mean cross-entropy
  double zero_shot_accuracy = -1.0;  // nearest class caption embedding
};

// What one optimizer step did.
struct StepOutcome {
  bool skipped = false;                 // non-finite loss ([train] nonfinite = "skip") or overflow
  std::map<std::string, double> terms;  // weighted value of each term, mean over micro-batches
  int64_t samples = 0;
  double grad_norm = 0.0;               // global, unscaled, before clipping
  double lr = 0.0;
  double loss_scale = 1.0;
};

// Everything one experiment needs, built and validated from its config.
class Experiment {
 public:
  // Validates every section, resolves and creates the plugins. With load_data=false the
  // dataset is not read and parameters are not moved into flat buffers (`tessera check`).
  Experiment(const Config& config, bool load_data = true);
  ~Experiment();

  TrainSummary train();
  EvalResult evaluate();

  const Config& config() const { return config_; }
  const PluginRegistry& registry() const { return registry_; }
  FlatParams& params() { return params_; }
  Engine& engine() { return *engine_; }
  bool is_main_rank() const { return env_.rank == 0; }
  const StateStore& states() const { return states_; }
  // Bytes per parameter by category ("parameters", "gradients", "master", "optimizer_states").
  std::vector<std::pair<std::string, double>> bytes_per_param() const;
  // One line per component, for the log and `tessera check`.
  std::string describe() const;

 private:
  void build_plugins();
  TrainSummary train_loop();
  void build_data();
  void check_device_computes(int32_t dtype, const char* role) const;
  StepOutcome train_step(int64_t step, int64_t total_steps, TensorMap& batch);
  void run_forward(TensorMap& batch) const;
  std::vector<Term> compute_terms(const TensorMap& batch) const;
  void optimizer_step(int64_t step, double lr, double grad_scale);
  double grad_norm() const;
  void save_model(const std::string& path) const;
  // Checkpoints: every encoder's non-trained buffers by qualified name.
  std::vector<std::pair<std::string, at::Tensor>> encoder_buffers() const;
  std::string checkpoint_dir() const;
  std::vector<OwnedRange> owned_ranges() const;
  void save_checkpoint_at(int64_t step, int64_t epoch, int64_t batch, int64_t skipped);
  CheckpointMeta resume_from(const std::string& spec);

  const Config& config_;
  Section experiment_, data_, optimizer_, schedule_, train_, eval_, checkpoint_, dist_;
  DistEnv env_;                        // rank and world size (torchrun's variables)
  std::unique_ptr<Comm> comm_;         // when WORLD_SIZE > 1
  std::unique_ptr<GradReducer> reducer_;  // bucketed, overlapped (WORLD_SIZE > 1)
  std::unique_ptr<TreeReducer> tree_;     // instead, with [dist] deterministic_groups
  bool gathers_ = false;                  // some loss all-gathers batch tensors (WORLD_SIZE > 1)
  // The element range of each flat buffer this rank updates: all of it, or with ZeRO-1/2 one
  // contiguous 1/world_size slice (its optimizer state and master live only here; with
  // ZeRO-2 also its gradients).
  int64_t shard_begin(const FlatParamBuffer& b, int rank) const;
  int64_t shard_end(const FlatParamBuffer& b, int rank) const;
  bool partitioned() const { return comm_ && dist_.get_int("zero_stage") >= 1; }
  bool grads_partitioned() const { return comm_ && dist_.get_int("zero_stage") >= 2; }
  PluginRegistry registry_;
  StateStore states_;
  std::vector<std::unique_ptr<EncoderInstance>> encoders_;
  std::vector<std::unique_ptr<LossInstance>> losses_;
  std::unique_ptr<PrecisionInstance> precision_;
  tsr_precision_info precision_info_{};
  FlatParams params_;
  std::unique_ptr<Engine> engine_;  // after the flat buffers exist
  bool warned_unused_ = false;
  std::optional<ImageDataset> train_data_, test_data_;
  std::unique_ptr<BatchLoader> train_loader_, test_loader_;
  std::vector<ClassCaptions> captions_;  // per class, when [data] captions = true
  at::Tensor zero_shot_prompts_;         // (C * heldout, caption_len) int64 byte ids
  at::Tensor zero_shot_owner_;           // (C * heldout,) int64 class of each prompt
  at::Device device_ = at::kCPU;
  std::string output_dir_;
};

}  // namespace tessera

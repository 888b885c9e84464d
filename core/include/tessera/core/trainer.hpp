// tessera/core/trainer.hpp — Experiment: everything one experiment needs, built once from its
// config (options, components, flat parameters, gradient sync, updater, data, evaluators), and
// the training loop that runs it.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tessera/core/checkpoint.hpp"
#include "tessera/core/comm.hpp"
#include "tessera/core/components.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/engine.hpp"
#include "tessera/core/evaluators.hpp"
#include "tessera/core/flat_params.hpp"
#include "tessera/core/grad_sync.hpp"
#include "tessera/core/metrics_window.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/output_guard.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "tessera/core/safetensors.hpp"
#include "tessera/core/shard.hpp"
#include "tessera/core/training_data.hpp"
#include "tessera/core/updater.hpp"

namespace tessera {

// What a finished run reports.
struct TrainSummary {
  int64_t steps = 0;
  int64_t epochs = 0;
  double final_loss = 0.0;      // mean training loss over the last logging window
  double eval_accuracy = -1.0;  // last evaluation; -1 when none ran
  double zero_shot_accuracy = -1.0;
  double zero_shot_audio_accuracy = -1.0;
  double recall_at_1 = -1.0;    // the first [eval] retrieval pair, A -> B
  double eval_loss = -1.0;      // [eval] loss: the objective on the evaluation split
  double perplexity = -1.0;     // exp of it, for per-token terms
  double train_seconds = 0.0;   // training loop only (excludes building and data loading)
  int64_t skipped_steps = 0;    // steps dropped for a non-finite loss ([train] nonfinite = "skip")
  std::string output_dir;
};

class Experiment {
 public:
  // Validates every section, resolves and creates the plugins. With load_data=false the
  // dataset is not read and parameters are not moved into flat buffers (`tessera check`).
  // Process setup (threads, log level) is the caller's: see runtime.hpp.
  Experiment(const Config& config, bool load_data = true);
  ~Experiment();

  TrainSummary train();
  EvalResult evaluate();
  // Sets the parameters (through the backend's import_master) and buffers from a model file as
  // save_model / `tessera export` write it; an Error names a missing tensor or a shape mismatch.
  void load_weights(const std::string& path);
  // A model file (model.safetensors at the end of a run, `tessera init` at step 0):
  // final_weights() (collective under ZeRO), written by rank 0.
  void save_model(const std::string& path, int64_t step);

  const Config& config() const { return config_; }
  const PluginRegistry& registry() const { return registry_; }
  FlatParams& params() { return params_; }
  Engine& engine() { return *engine_; }
  bool is_main_rank() const { return env_.rank == 0; }
  const StateStore& states() const { return states_; }
  TrainingData* data() { return data_.get(); }  // null when built without data
  const Components& components() const { return *components_; }
  at::Device device() const { return device_; }
  // Bytes per parameter by category ("parameters", "gradients", "master", "optimizer_states").
  std::vector<std::pair<std::string, double>> bytes_per_param() const;
  // One line per component, for the log and `tessera check`.
  std::string describe() const;
  // The whole experiment as TOML: every section and slot with every key, defaults filled in
  // (what config.resolved.toml holds; it trains the same run when given back to `train`).
  std::string resolved_config() const;

 private:
  TrainSummary train_loop();
  // Rank 0 locks the output directory; a fresh run (not `resuming`) into one that holds an
  // earlier run is refused, overwrites it or moves to the first free "<dir>-N", as [experiment]
  // on_existing says. Every rank then uses the directory rank 0 chose.
  void claim_output_dir(bool resuming);
  StepOutcome train_step(int64_t step, int64_t total_steps, StepBatches batches);
  // Per [[loss]]: the units (tokens) its sum terms cover in the whole global batch (this rank's
  // micro-batches, summed over ranks), at least 1.
  std::vector<double> global_units(const StepBatches& batches) const;
  nlohmann::json header_record(int64_t step, bool resumed, int64_t total_steps) const;
  void note_unused(const StepStats& stats, int64_t step);
  // A signal asked every rank to stop after `step`: checkpoint (when on and not `saved` at this
  // step already) and throw Interrupted.
  [[noreturn]] void interrupt(int64_t step, int64_t epoch, int64_t batch, int64_t skipped, bool saved);
  // Checkpoints (run_checkpoint.cpp).
  std::string checkpoint_dir() const;
  void save_checkpoint_at(int64_t step, int64_t epoch, int64_t batch, int64_t skipped);
  CheckpointMeta resume_from(const std::string& spec);
  // Every parameter as its exact fp32 master, by name and shape, then the encoders' buffers.
  NamedTensors final_weights();

  const Config& config_;
  DistEnv env_;            // rank and world size (torchrun's variables)
  CoreOptions opt_;        // the core's sections, parsed once
  at::Device device_ = at::kCPU;
  std::unique_ptr<Comm> comm_;      // when WORLD_SIZE > 1
  std::unique_ptr<GradSync> sync_;  // chosen once from [dist]
  PluginRegistry registry_;
  StateStore states_;
  std::unique_ptr<Components> components_;
  FlatParams params_;
  std::unique_ptr<Engine> engine_;  // after the flat buffers exist
  ShardPlan plan_;                  // which range of each flat buffer this rank updates
  std::unique_ptr<Updater> updater_;
  DatasetSlot data_slot_;           // [data] validated against the dataset plugin's schema
  std::unique_ptr<TrainingData> data_;
  std::vector<std::unique_ptr<Evaluator>> evaluators_;
  bool warned_unused_ = false;
  std::string run_id_;  // in each checkpoint's manifest: pruning removes only this run's
  std::unique_ptr<OutputDirLock> output_lock_;  // rank 0, while training: no second run writes here
};

}  // namespace tessera

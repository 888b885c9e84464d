// tessera/core/training_data.hpp — the data of one experiment ([data]): the dataset plugin it
// names, the training and evaluation loaders, each step's micro-batches as this rank's rows,
// and the metadata evaluators read (zero-shot prompts).
#pragma once
#include <memory>
#include <optional>
#include <vector>

#include "tessera/core/comm.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/loader.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "tessera/core/tensor_map.hpp"

namespace tessera {

// Class prompts for zero-shot evaluation, from the dataset's "zero_shot_prompts" metadata.
struct ZeroShotPrompts {
  TensorMap inputs;  // what a text encoder reads, each (P, ...), e.g. "caption_ids" (P, L) i64
  at::Tensor owner;  // (P,) int64 class of each prompt
};

// The micro-batches of one optimizer step, already cut to this rank's rows.
struct StepBatches {
  std::vector<TensorMap> micro;
  int64_t samples = 0;     // examples of the GLOBAL batch (all ranks) these stand for
  double wait_ms = 0;      // how long the step waited for them
};

// [data] resolved against the core's keys and the dataset plugin's schema: the plugin's
// library and its section (what `tessera check` validates without reading any data).
struct DatasetSlot {
  std::shared_ptr<PluginLibrary> lib;
  Section section;
  std::string label;  // "[data] (fashion_mnist)"
  static DatasetSlot resolve(const Config& config, const PluginRegistry& registry, const DataOptions& data);
};

class TrainingData {
 public:
  // Creates the dataset plugin [data] names and the two loaders (this rank's rows of the
  // training split; the whole evaluation split).
  TrainingData(const DatasetSlot& slot, const DataOptions& data, uint64_t seed, const DistEnv& env);

  const DatasetInstance& dataset() const { return *dataset_; }
  int64_t batches_per_epoch() const { return train_->batches_per_epoch(); }
  // Starts `epoch` at its global batch `batch` (resume).
  void start_epoch(int64_t epoch, int64_t batch);
  // The next `count` global micro-batches, this rank's rows of each.
  StepBatches next_step(int64_t count);

  DataLoader& test() { return *test_; }
  // Present when the dataset offers "zero_shot_prompts" metadata (class prompts as text).
  const std::optional<ZeroShotPrompts>& prompts() const { return prompts_; }
  // Present when it offers "zero_shot_audio_prompts" (class prompts spoken).
  const std::optional<ZeroShotPrompts>& audio_prompts() const { return audio_prompts_; }

 private:
  std::unique_ptr<DatasetInstance> dataset_;
  std::unique_ptr<DataLoader> train_, test_;
  std::optional<ZeroShotPrompts> prompts_, audio_prompts_;
};

}  // namespace tessera

// tessera/core/training_data.hpp — the data of one experiment ([data]): the training and test
// loaders, each step's micro-batches as this rank's rows, and the metadata evaluators read.
#pragma once
#include <optional>
#include <vector>

#include "tessera/core/captions.hpp"
#include "tessera/core/comm.hpp"
#include "tessera/core/data.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/tensor_map.hpp"

namespace tessera {

// Class prompts for zero-shot evaluation (from the dataset's captions).
struct ZeroShotPrompts {
  std::string key;     // the batch tensor the text encoder reads ([data] caption_key)
  at::Tensor ids;      // (C * heldout, caption_len) int64 byte ids, class by class
  at::Tensor owner;    // (C * heldout,) int64 class of each prompt
};

// The micro-batches of one optimizer step, already cut to this rank's rows.
struct StepBatches {
  std::vector<TensorMap> micro;
  int64_t samples = 0;  // examples of the GLOBAL batch (all ranks) these stand for
};

class TrainingData {
 public:
  // Reads the dataset [data] names (Fashion-MNIST, with WordNet captions when asked).
  TrainingData(const DataOptions& data, uint64_t seed, const DistEnv& env);

  int64_t batches_per_epoch() const { return train_->batches_per_epoch(); }
  // Starts `epoch` at its batch `batch` (resume).
  void start_epoch(int64_t epoch, int64_t batch);
  // The next `count` global micro-batches, each split evenly over the ranks.
  StepBatches next_step(int64_t count);

  BatchLoader& test() { return *test_; }
  // Present when the dataset has class captions ([data] captions = true).
  const std::optional<ZeroShotPrompts>& prompts() const { return prompts_; }

 private:
  int rank_, world_;
  std::optional<ImageDataset> train_data_, test_data_;
  std::vector<ClassCaptions> captions_;
  std::unique_ptr<BatchLoader> train_, test_;
  std::optional<ZeroShotPrompts> prompts_;
};

}  // namespace tessera

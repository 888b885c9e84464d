// core/src/training_data.cpp — builds the experiment's loaders from [data] and serves each
// optimizer step's micro-batches, cut to this rank's rows of the global batch.
#include "tessera/core/training_data.hpp"

namespace tessera {

TrainingData::TrainingData(const DataOptions& data, uint64_t seed, const DistEnv& env)
    : rank_(env.rank), world_(env.world_size) {
  train_data_ = load_fashion_mnist(data.path, "train", data.train_limit);
  test_data_ = load_fashion_mnist(data.path, "test", data.test_limit);
  BatchLoader::Options o;
  o.batch_size = data.batch_size;
  o.shuffle = data.shuffle;
  o.seed = seed;
  if (data.captions) {
    captions_ = fashion_mnist_captions(data.wordnet_path, data.heldout_captions);
    o.captions = &captions_;
    o.caption_len = data.caption_len;
    o.caption_key = data.caption_key;
    // Zero-shot prompts: every class's held-out captions, in class order.
    std::vector<std::string> prompts;
    std::vector<int64_t> owner;
    for (size_t c = 0; c < captions_.size(); ++c)
      for (const auto& text : captions_[c].heldout) {
        prompts.push_back(text);
        owner.push_back(static_cast<int64_t>(c));
      }
    prompts_ = ZeroShotPrompts{data.caption_key, encode_caption_bytes(prompts, o.caption_len), at::tensor(owner, at::kLong)};
  }
  train_ = std::make_unique<BatchLoader>(*train_data_, o);
  o.batch_size = data.eval_batch_size;
  o.shuffle = false;
  o.captions = nullptr;
  test_ = std::make_unique<BatchLoader>(*test_data_, o);
}

void TrainingData::start_epoch(int64_t epoch, int64_t batch) {
  train_->start_epoch(epoch);
  train_->seek(batch);
}

StepBatches TrainingData::next_step(int64_t count) {
  StepBatches out;
  for (int64_t i = 0; i < count; ++i) {
    TensorMap batch;
    train_->next(batch);
    const int64_t global_rows = batch.begin()->second.size(0);
    out.samples += global_rows;
    if (world_ > 1) {  // every rank reads the global batch and keeps its own rows
      const int64_t rows = global_rows / world_;
      for (auto& [name, t] : batch) t = t.narrow(0, rank_ * rows, rows);
    }
    out.micro.push_back(std::move(batch));
  }
  return out;
}

}  // namespace tessera

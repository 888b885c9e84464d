// core/src/training_data.cpp — builds the experiment's dataset plugin and loaders from [data]
// and serves each optimizer step's micro-batches, cut to this rank's rows of the global batch.
#include "tessera/core/training_data.hpp"

#include "tessera/core/error.hpp"

namespace tessera {

DatasetSlot DatasetSlot::resolve(const Config& config, const PluginRegistry& registry, const DataOptions& data) {
  DatasetSlot s;
  s.lib = registry.get(data.dataset, TSR_KIND_DATASET, "[data] dataset at " + data.section.where("dataset").str());
  s.label = "[data] (" + s.lib->name() + ")";
  s.section = config.resolve(config.table("data"), data_schema().with_plugin_keys(s.lib->schema(), s.label), "[data]");
  return s;
}

TrainingData::TrainingData(const DatasetSlot& slot, const DataOptions& data, uint64_t seed, const DistEnv& env)
    : dataset_(std::make_unique<DatasetInstance>(slot.lib, slot.section, slot.label)) {
  DataLoader::Options o;
  o.split = data.train_split;
  o.batch_size = data.batch_size;
  o.limit = data.train_limit;
  o.shuffle = data.shuffle;
  o.drop_last = data.drop_last;
  o.seed = seed;
  o.rank = env.rank;
  o.world = env.world_size;
  o.workers = data.workers;
  o.prefetch = data.prefetch;
  train_ = std::make_unique<DataLoader>(*dataset_, o);
  o.split = data.eval_split;
  o.batch_size = data.eval_batch_size;
  o.limit = data.test_limit;
  o.shuffle = false;
  o.drop_last = false;
  o.rank = 0, o.world = 1;  // evaluation runs on rank 0 over the whole split
  test_ = std::make_unique<DataLoader>(*dataset_, o);
  if (std::optional<TensorMap> meta = dataset_->metadata("zero_shot_prompts")) {
    auto owner = meta->find("class");
    if (owner == meta->end() || owner->second.dim() != 1 || owner->second.scalar_type() != at::kLong)
      throw PluginError(dataset_->label() + ": metadata 'zero_shot_prompts' needs a (P,) int64 tensor 'class'");
    ZeroShotPrompts p;
    p.owner = owner->second;
    meta->erase(owner);
    p.inputs = std::move(*meta);
    prompts_ = std::move(p);
  }
}

void TrainingData::start_epoch(int64_t epoch, int64_t batch) { train_->start_epoch(epoch, batch); }

StepBatches TrainingData::next_step(int64_t count) {
  StepBatches out;
  for (int64_t i = 0; i < count; ++i) {
    TensorMap batch;
    int64_t global_rows = 0;
    if (!train_->next(batch, &global_rows))
      throw Error("the training split ran out of batches within an epoch (" + std::to_string(batches_per_epoch()) +
                  " per epoch)");
    out.samples += global_rows;
    out.micro.push_back(std::move(batch));
  }
  out.wait_ms = train_->take_wait_ms();
  return out;
}

}  // namespace tessera

// core/src/training_data.cpp — builds the experiment's dataset plugin and loaders from [data]
// and serves each optimizer step's micro-batches, cut to this rank's rows of the global batch.
#include "tessera/core/training_data.hpp"

#include "tessera/core/error.hpp"

namespace tessera {
namespace {

// A dataset's class prompts of metadata `name`, checked: a (P,) int64 class per prompt, P rows in
// every other tensor.
std::optional<ZeroShotPrompts> read_prompts(const DatasetInstance& dataset, const std::string& name) {
  std::optional<TensorMap> meta = dataset.metadata(name);
  if (!meta) return std::nullopt;
  auto owner = meta->find("class");
  if (owner == meta->end() || owner->second.dim() != 1 || owner->second.scalar_type() != at::kLong ||
      owner->second.numel() == 0)
    throw PluginError(dataset.label() + ": metadata '" + name + "' needs a non-empty (P,) int64 tensor 'class'");
  const int64_t p = owner->second.numel();
  if (owner->second.min().item<int64_t>() < 0)
    throw PluginError(dataset.label() + ": metadata '" + name + "': a negative class in 'class'");
  for (const auto& [key, t] : *meta)
    if (key != "class" && (t.dim() == 0 || t.size(0) != p))
      throw PluginError(dataset.label() + ": metadata '" + name + "': tensor '" + key + "' must have " +
                        std::to_string(p) + " rows, one per prompt");
  ZeroShotPrompts out;
  out.owner = owner->second;
  meta->erase(owner);
  out.inputs = std::move(*meta);
  return out;
}

}  // namespace

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
  prompts_ = read_prompts(*dataset_, "zero_shot_prompts");
  audio_prompts_ = read_prompts(*dataset_, "zero_shot_audio_prompts");
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

// core/src/run_checkpoint.cpp — an Experiment's checkpoints and final weights: what each rank
// saves and restores (its owned shards, rank 0 the shared parts), and model.safetensors.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "tessera/core/safetensors.hpp"
#include "tessera/core/trainer.hpp"

namespace tessera {

std::string Experiment::checkpoint_dir() const {
  return opt_.checkpoint.dir.empty() ? opt_.experiment.output_dir + "/checkpoints" : opt_.checkpoint.dir;
}

namespace {
// A new run's id: which checkpoints in a directory this run may prune (not a seed of anything).
std::string new_run_id() {
  std::random_device rd;
  const uint64_t t = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32 ^ rd()) ^ t ^ (static_cast<uint64_t>(::getpid()) << 17);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
}  // namespace

void Experiment::save_checkpoint_at(int64_t step, int64_t epoch, int64_t batch, int64_t skipped) {
  CheckpointMeta meta;
  meta.step = step;
  meta.epoch = epoch;
  meta.batch = batch;
  meta.skipped_steps = skipped;
  meta.precision = components_->precision().library().name();
  meta.master_policy = components_->precision_info().master_policy;
  meta.optimizer = opt_.optimizer.name;
  meta.config_toml = config_.dump();
  meta.config_hash = std::to_string(std::hash<std::string>{}(meta.config_toml));
  if (run_id_.empty()) run_id_ = new_run_id();
  meta.run_id = run_id_;
  // Every rank writes the pieces it owns (ZeRO-1: its slice of the optimizer state; rank 0
  // also the shared parts), then rank 0 publishes the whole checkpoint at once.
  const std::string dir = checkpoint_dir();
  write_checkpoint_part(dir, step, env_.rank,
                        gather_checkpoint(params_, states_, components_->precision(), updater_->owned(),
                                          components_->encoder_buffers(), /*write_shared=*/env_.rank == 0));
  if (comm_) comm_->barrier();
  if (env_.rank == 0) publish_checkpoint(dir, meta, env_.world_size, opt_.checkpoint.keep);
  if (comm_) comm_->barrier();
}

CheckpointMeta Experiment::resume_from(const std::string& spec) {
  const std::string path = resolve_checkpoint_path(checkpoint_dir(), spec);
  std::map<std::string, at::Tensor> tensors;
  CheckpointMeta meta = read_checkpoint(path, tensors);
  if (meta.optimizer != opt_.optimizer.name)
    spdlog::warn("checkpoint {} was written with optimizer {}, this run uses {}", path, meta.optimizer,
                 opt_.optimizer.name);
  restore_checkpoint(tensors, params_, states_, components_->precision(), updater_->owned(),
                     components_->encoder_buffers(), path);
  updater_->share_owned_parameters();
  run_id_ = meta.run_id;  // a resumed run prunes the checkpoints of the run it continues (empty: a new id)
  const std::string& backend = components_->precision().library().name();
  if (meta.precision != backend)
    spdlog::info("checkpoint {} was written by precision backend '{}'; converted to '{}'", path, meta.precision, backend);
  spdlog::info("resumed from {} at step {} (epoch {}, batch {})", path, meta.step, meta.epoch + 1, meta.batch);
  return meta;
}

void Experiment::save_model(const std::string& path) const {
  NamedTensors tensors;
  for (auto& [name, t] : params_.named_parameters()) tensors.emplace_back(name, t.detach().cpu());
  save_safetensors(path, tensors, {{"format", "pt"}, {"tessera_version", TESSERA_VERSION}, {"config", config_.dump()}});
  spdlog::info("model weights saved to {}", path);
}

}  // namespace tessera

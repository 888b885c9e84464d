// core/src/run_checkpoint.cpp — an Experiment's checkpoints and final weights: what each rank
// saves and restores (its owned shards, rank 0 the shared parts), and model.safetensors.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "tessera/core/checkpoint.hpp"
#include "tessera/core/error.hpp"
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
  if (data_ && meta.batch > data_->batches_per_epoch())
    throw Error("checkpoint " + path + ": batch " + std::to_string(meta.batch) + " lies beyond the " +
                std::to_string(data_->batches_per_epoch()) + " batches of an epoch of this run's data ([data] " +
                "batch_size, train_limit or the dataset changed since it was written)");
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

NamedTensors Experiment::final_weights() {
  at::NoGradGuard no_grad;
  // Each parameter as its exact fp32 master (the backend's export_master: the fp32 copy of bf16
  // backends, the widened parameters of fp32 ones), assembled from every owner's range.
  std::map<std::string, at::Tensor> values;
  const tsr_precision_info& info = components_->precision_info();
  for (auto& b : params_.buffers()) {
    at::Tensor full = at::zeros({b.numel()}, b.params.options().dtype(at::kFloat));  // (numel,) f32
    const OwnedRange mine = plan_.range(b, env_.rank);
    if (mine.numel() > 0) {
      at::Tensor part = at::empty({mine.numel()}, full.options());
      ShardView view(b, info, mine);
      components_->precision().export_master(view.shard, part);
      full.narrow(0, mine.begin, mine.numel()).copy_(part);
    }
    if (comm_ && plan_.partitioned())
      for (int r = 0; r < env_.world_size; ++r) {
        const OwnedRange owner = plan_.range(b, r);
        if (owner.numel() == 0) continue;
        at::Tensor slice = full.narrow(0, owner.begin, owner.numel()).clone();
        comm_->broadcast(slice, r);
        full.narrow(0, owner.begin, owner.numel()).copy_(slice);
      }
    for (const auto& s : b.slots) values[s.name] = full.narrow(0, s.offset, s.numel).view(s.shape).cpu().clone();
  }
  NamedTensors out;
  for (const auto& [name, t] : params_.named_parameters()) out.emplace_back(name, values.at(name));
  // Then the state that is not trained but the model needs (BatchNorm running statistics).
  for (const auto& [name, t] : components_->encoder_buffers()) out.emplace_back(name, t.detach().cpu().clone());
  return out;
}

void Experiment::save_model(const std::string& path, int64_t step) {
  NamedTensors tensors = final_weights();  // collective under ZeRO: every rank takes part
  if (env_.rank != 0) return;
  save_safetensors(path, tensors, model_file_metadata(components_->precision().library().name(), config_.dump(), step));
  spdlog::info("model weights saved to {} (fp32 parameters and buffers)", path);
}

void Experiment::load_weights(const std::string& path) {
  at::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> file;
  for (auto& [name, t] : load_safetensors(path).tensors) file[name] = t;
  auto take = [&](const std::string& name, const at::Tensor& dst, const char* what) {
    auto it = file.find(name);
    if (it == file.end()) throw Error(path + " has no tensor '" + name + "' (" + what + " of this model)");
    if (it->second.sizes() != dst.sizes())
      throw Error(path + ": tensor '" + name + "' has shape " + c10::str(it->second.sizes()) + ", this model's " + what +
                  " has " + c10::str(dst.sizes()));
    return it->second;
  };
  // Parameters through the backend's import_master, so a bf16 backend gets its exact master.
  const tsr_precision_info& info = components_->precision_info();
  std::map<std::string, at::Tensor> params;
  for (const auto& [name, t] : params_.named_parameters()) params[name] = take(name, t, "a parameter");
  for (auto& b : params_.buffers()) {
    at::Tensor full = at::empty({b.numel()}, b.params.options().dtype(at::kFloat));
    for (const auto& s : b.slots) full.narrow(0, s.offset, s.numel).copy_(params.at(s.name).flatten());
    const OwnedRange mine = plan_.range(b, env_.rank);
    if (mine.numel() == 0) continue;
    ShardView view(b, info, mine);
    components_->precision().import_master(view.shard, full.narrow(0, mine.begin, mine.numel()).contiguous());
  }
  updater_->share_owned_parameters();  // under ZeRO: each owner's parameters to every rank
  for (const auto& [name, t] : components_->encoder_buffers()) t.copy_(take(name, t, "a buffer"));
  spdlog::info("weights loaded from {}", path);
}

}  // namespace tessera

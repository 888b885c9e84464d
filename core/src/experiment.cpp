// core/src/experiment.cpp — builds an Experiment: every choice the config makes (components,
// data parallelism, gradient-sync strategy, shard plan, evaluators) is made here, once.
#include <spdlog/spdlog.h>

#include <sstream>

#include "tessera/core/error.hpp"
#include "tessera/core/runtime.hpp"
#include "tessera/core/trainer.hpp"

namespace tessera {

Experiment::Experiment(const Config& config, bool load_data)
    : config_(config), env_(DistEnv::from_env()), opt_(CoreOptions::resolve(config, env_)) {
  device_ = training_device(opt_.experiment, env_);
  registry_.scan(PluginRegistry::default_search_path(opt_.experiment.plugin_path));
  data_slot_ = DatasetSlot::resolve(config_, registry_, opt_.data);
  components_ = std::make_unique<Components>(config_, registry_, opt_.experiment.seed, params_, &states_, device_);
  at::manual_seed(opt_.experiment.seed);  // dropout etc. during training
  if (!load_data) return;

  // Flat buffers in the precision backend's dtypes, then its per-shard state.
  const tsr_precision_info& info = components_->precision_info();
  params_.finalize(to_scalar_type(info.param_dtype), to_scalar_type(info.grad_dtype), device_);
  engine_ = std::make_unique<Engine>(params_);
  if (env_.world_size > 1) {
    // Data parallel over c10d (Gloo; NCCL on CUDA): same config everywhere, rank 0's weights
    // everywhere.
    comm_ = std::make_unique<Comm>(env_, std::chrono::seconds(opt_.dist.timeout_s), std::chrono::milliseconds(500),
                                   device_);
    at::Tensor hash = at::full({1}, static_cast<int64_t>(std::hash<std::string>{}(config_.dump()) >> 1), at::kLong);
    at::Tensor mine = hash.clone();
    comm_->broadcast(hash, 0);
    if (comm_->any(!at::equal(hash, mine)))
      throw ConfigError("rank " + std::to_string(env_.rank) + ": the ranks were started with different configs "
                        "(resolved config hashes differ from rank 0's); start every rank with the same file and --set");
    for (auto& b : params_.buffers()) comm_->broadcast(b.params, 0);
  }
  try {
    if (opt_.dist.deterministic_groups > 0)
      components_->refuse_gather("cannot be combined with [dist] deterministic_groups (a group is not a global batch)");
    if (comm_) components_->gather_across(*comm_);

    plan_ = ShardPlan(env_.world_size, comm_ && opt_.dist.zero_stage >= 1);
    sync_ = make_grad_sync(opt_.dist, comm_.get(), params_, *engine_, plan_);
    if (opt_.dist.deterministic_groups > 0) spdlog::info("{}", sync_->describe());
    else if (comm_) spdlog::info("data parallel: rank {} of {}, {}", env_.rank, env_.world_size, sync_->describe());

    states_.device = device_;
    updater_ = std::make_unique<Updater>(params_, components_->precision(), plan_, comm_.get(), env_.rank,
                                         opt_.optimizer, opt_.train.clip_grad_norm);
    updater_->init_shards();
    data_ = std::make_unique<TrainingData>(data_slot_, opt_.data, opt_.experiment.seed, env_);
    evaluators_ = make_evaluators(opt_.eval, *data_, *components_, device_);
  } catch (const std::exception& e) {
    // Peers waiting in a collective then report this rank's own reason.
    if (comm_) comm_->record_exit(e.what());
    throw;
  }
}

Experiment::~Experiment() = default;

std::vector<std::pair<std::string, double>> Experiment::bytes_per_param() const {
  // Per element of the flat buffers (parameters plus their alignment padding, well under 1%).
  int64_t elements = 0;
  for (const auto& b : params_.buffers()) elements += b.numel();
  const double n = static_cast<double>(std::max<int64_t>(elements, 1));
  double p = 0, g = 0, master = 0, states = 0;
  for (const auto& b : params_.buffers()) {
    p += static_cast<double>(b.params.nbytes());
    g += static_cast<double>(b.grads.nbytes());
  }
  for (const auto& s : states_.buffers)  // TSR_STATE_SCALARS: a few bytes per run, not per parameter
    if (s.category != TSR_STATE_SCALARS)
      (s.category == TSR_STATE_MASTER ? master : states) += static_cast<double>(s.data.nbytes());
  return {{"parameters", p / n}, {"gradients", g / n}, {"master", master / n}, {"optimizer_states", states / n},
          {"total", (p + g + master + states) / n}};
}

std::string Experiment::resolved_config() const {
  toml::table root;
  auto put = [&](const char* name, const Section& s) { root.insert_or_assign(name, s.to_table()); };
  put("experiment", opt_.experiment.section);
  put("data", data_slot_.section);  // the core's keys and the dataset plugin's
  put("optimizer", opt_.optimizer.section);
  put("schedule", opt_.schedule.section);
  put("train", opt_.train.section);
  put("eval", opt_.eval.section);
  put("metrics", opt_.metrics.section);
  put("checkpoint", opt_.checkpoint.section);
  put("dist", opt_.dist.section);
  components_->resolved_tables(root);
  return dump_toml(root);
}

std::string Experiment::describe() const {
  std::ostringstream o;
  o << "dataset   " << data_slot_.label << "  <- " << data_slot_.lib->path() << "\n";
  o << components_->describe();
  o << "optimizer " << opt_.optimizer.name << " lr " << opt_.optimizer.lr << ", schedule " << opt_.schedule.decay
    << " with " << opt_.schedule.warmup_steps << " warmup steps\n";
  return o.str();
}

}  // namespace tessera

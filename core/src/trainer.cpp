// core/src/trainer.cpp — builds an Experiment from its config and runs the training loop:
// forward through encoders, terms from losses, one backward, clip, optimizer step, metrics.
#include "tessera/core/trainer.hpp"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>
#include <malloc.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "tessera/core/captions.hpp"
#include "tessera/core/checkpoint.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/metrics.hpp"
#include "tessera/core/safetensors.hpp"
#include "tessera/kernels/optim.h"
#include "tessera/kernels/precision.h"

namespace fs = std::filesystem;

namespace tessera {

// Each plugin instance initialises its parameters from its own stream, derived from the
// experiment seed and the instance's name: adding or reordering components changes no one
// else's initial weights, and a component built in another process starts identical.
void seed_for_instance(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  at::manual_seed(seed ^ h);
}

double scheduled_lr(const Section& opt, const Section& sched, int64_t step, int64_t total_steps) {
  const double peak = opt.get_float("lr");
  const int64_t warmup = sched.get_int("warmup_steps");
  if (step <= warmup) return peak * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(warmup, 1));
  const std::string& decay = sched.get_string("decay");
  if (decay == "constant" || total_steps <= warmup) return peak;
  const double floor = peak * sched.get_float("min_lr_ratio");
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total_steps - warmup));
  if (decay == "linear") return floor + (peak - floor) * (1.0 - progress);
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

// ---- building ----------------------------------------------------------------------------
namespace {

Schema merged(const Schema& core, const Schema& plugin, const std::string& slot) {
  Schema s = core;
  for (const auto& k : plugin.keys) {
    if (core.find(k.name)) throw PluginError(slot + ": plugin declares key '" + k.name + "', which the core reserves");
    s.keys.push_back(k);
  }
  return s;
}

// The `plugin` key of a slot table, read before the plugin (and so the full schema) is known.
std::string plugin_name(const Config& cfg, const toml::table& t, const Schema& core, const std::string& slot) {
  const toml::node* n = t.get("plugin");
  if (!n) {
    const KeySpec* k = core.find("plugin");
    if (k && k->default_toml) return std::get<std::string>(parse_toml_value(*k->default_toml, ValueType::String));
    SourcePos pos{cfg.path(), static_cast<int>(t.source().begin.line), static_cast<int>(t.source().begin.column)};
    throw ConfigError(pos.str() + ": missing required key 'plugin' in " + slot);
  }
  if (!n->is_string()) {
    SourcePos pos{cfg.path(), static_cast<int>(n->source().begin.line), static_cast<int>(n->source().begin.column)};
    throw ConfigError(pos.str() + ": key 'plugin' in " + slot + " must be a string");
  }
  return **n->as_string();
}

}  // namespace

Experiment::Experiment(const Config& config, bool load_data) : config_(config) {
  config_.check_sections(
      {"experiment", "data", "encoder", "loss", "precision", "optimizer", "schedule", "train", "eval", "checkpoint", "dist"});
  experiment_ = config_.resolve(config_.table("experiment"), experiment_schema(), "[experiment]");
  data_ = config_.resolve(config_.table("data"), data_schema(), "[data]");
  optimizer_ = config_.resolve(config_.table("optimizer"), optimizer_schema(), "[optimizer]");
  schedule_ = config_.resolve(config_.table("schedule"), schedule_schema(), "[schedule]");
  train_ = config_.resolve(config_.table("train"), train_schema(), "[train]");
  eval_ = config_.resolve(config_.table("eval"), eval_schema(), "[eval]");
  checkpoint_ = config_.resolve(config_.table("checkpoint"), checkpoint_schema(), "[checkpoint]");
  dist_ = config_.resolve(config_.table("dist"), dist_schema(), "[dist]");
  env_ = DistEnv::from_env();
  if (const int64_t groups = dist_.get_int("deterministic_groups"); groups > 0) {
    auto refuse = [&](const std::string& why) {
      throw ConfigError(dist_.where("deterministic_groups").str() + ": deterministic_groups = " + std::to_string(groups) +
                        " " + why);
    };
    auto pow2 = [](int64_t x) { return x > 0 && (x & (x - 1)) == 0; };
    if (!pow2(groups)) refuse("must be a power of two (the groups are summed as a binary tree)");
    if (!pow2(env_.world_size) || groups % env_.world_size != 0)
      refuse("needs a power-of-two WORLD_SIZE that divides it (WORLD_SIZE=" + std::to_string(env_.world_size) + ")");
    if (data_.get_int("batch_size") % groups != 0)
      refuse("must divide [data] batch_size " + std::to_string(data_.get_int("batch_size")));
    if (train_.get_int("grad_accum") != 1) refuse("needs [train] grad_accum = 1 (the groups are the accumulation)");
    if (dist_.get_int("zero_stage") >= 2) refuse("needs whole gradients on every rank: use zero_stage 0 or 1");
  }
  if (env_.world_size > 1 && data_.get_int("batch_size") % env_.world_size != 0)
    throw ConfigError(data_.where("batch_size").str() + ": batch_size " + std::to_string(data_.get_int("batch_size")) +
                      " (the global batch) must divide evenly over WORLD_SIZE=" + std::to_string(env_.world_size) + " ranks");

  spdlog::set_level(env_.rank == 0 ? spdlog::level::from_str(experiment_.get_string("log_level")) : spdlog::level::warn);
  // glibc returns large freed blocks to the OS at once; every step then page-faults its
  // activations back in (~25% of a CPU step here). Keep them in the heap instead.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  const int64_t threads = experiment_.get_int("threads");
  at::set_num_threads(threads > 0 ? static_cast<int>(threads) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  if (experiment_.get_string("device") == "cuda") {
    if (!at::hasCUDA())
      throw ConfigError(experiment_.where("device").str() + ": device = \"cuda\" but this build of LibTorch sees no CUDA device");
    // One GPU per local rank (torchrun's LOCAL_RANK); ranks share GPUs when there are fewer.
    const int gpus = std::max(1, static_cast<int>(c10::impl::getDeviceGuardImpl(at::kCUDA)->deviceCount()));
    device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env_.local_rank % gpus));
  }
  output_dir_ = experiment_.get_string("output_dir");
  if (output_dir_.empty()) output_dir_ = "runs/" + experiment_.get_string("name");

  registry_.scan(PluginRegistry::default_search_path(experiment_.get_strings("plugin_path")));
  build_plugins();
  at::manual_seed(static_cast<uint64_t>(experiment_.get_int("seed")));  // dropout etc. during training
  if (!load_data) return;

  // Flat buffers in the precision backend's dtypes, then its per-shard state.
  params_.finalize(to_scalar_type(precision_info_.param_dtype), to_scalar_type(precision_info_.grad_dtype), device_);
  engine_ = std::make_unique<Engine>(params_);
  if (env_.world_size > 1) {
    // Data parallel over c10d (Gloo; NCCL on CUDA): same config everywhere, rank 0's weights everywhere, and
    // gradients all-reduced in buckets while backward runs.
    comm_ = std::make_unique<Comm>(env_, std::chrono::seconds(dist_.get_int("timeout_s")), std::chrono::milliseconds(500),
                                   device_);
    at::Tensor hash = at::full({1}, static_cast<int64_t>(std::hash<std::string>{}(config_.dump()) >> 1), at::kLong);
    at::Tensor mine = hash.clone();
    comm_->broadcast(hash, 0);
    if (comm_->any(!at::equal(hash, mine)))
      throw ConfigError("rank " + std::to_string(env_.rank) + ": the ranks were started with different configs "
                        "(resolved config hashes differ from rank 0's); start every rank with the same file and --set");
    for (auto& b : params_.buffers()) comm_->broadcast(b.params, 0);
  }
  for (const auto& l : losses_) {
    if (l->config().get_strings("gather").empty()) continue;
    if (dist_.get_int("deterministic_groups") > 0)
      throw ConfigError(l->config().where("gather").str() + ": gather in " + l->label() +
                        " cannot be combined with [dist] deterministic_groups (a group is not a global batch)");
    gathers_ = comm_ != nullptr;
  }
  if (dist_.get_int("deterministic_groups") > 0) {
    tree_ = std::make_unique<TreeReducer>(comm_.get(), params_);
    spdlog::info("deterministic reduction: {} groups, {} per rank, summed as a binary tree",
                 dist_.get_int("deterministic_groups"), dist_.get_int("deterministic_groups") / env_.world_size);
  } else if (comm_) {
    GradReducer::OwnedFn owned;
    if (grads_partitioned()) {
      // ZeRO-2: this rank keeps the gradients of its own range only.
      std::vector<std::pair<int64_t, int64_t>> ranges;
      for (const auto& b : params_.buffers()) ranges.emplace_back(shard_begin(b, env_.rank), shard_end(b, env_.rank));
      params_.partition_grads(ranges);
      owned = [this](const FlatParamBuffer& b, int r) { return std::make_pair(shard_begin(b, r), shard_end(b, r)); };
    }
    reducer_ = std::make_unique<GradReducer>(*comm_, params_, static_cast<int64_t>(dist_.get_float("bucket_mb") * (1 << 20)),
                                             owned);
    engine_->set_listener(reducer_.get());
    spdlog::info("data parallel: rank {} of {}, ZeRO stage {}, {} gradient buckets", env_.rank, env_.world_size,
                 dist_.get_int("zero_stage"), reducer_->num_buckets());
  }
  states_.device = device_;
  for (auto& buf : params_.buffers()) {
    ShardView view(buf, precision_info_, OwnedRange{shard_begin(buf, env_.rank), shard_end(buf, env_.rank)});
    precision_->init_shard(view.shard);
  }
  build_data();
}

int64_t Experiment::shard_begin(const FlatParamBuffer& b, int rank) const {
  if (!partitioned()) return 0;
  const int64_t per = (b.numel() + env_.world_size - 1) / env_.world_size;
  return std::min(b.numel(), per * rank);
}

int64_t Experiment::shard_end(const FlatParamBuffer& b, int rank) const {
  if (!partitioned()) return b.numel();
  const int64_t per = (b.numel() + env_.world_size - 1) / env_.world_size;
  return std::min(b.numel(), per * (rank + 1));
}

Experiment::~Experiment() = default;

void Experiment::build_plugins() {
  auto slot_label = [](const char* kind, size_t i, const std::string& name) {
    return std::string("[[") + kind + "]] #" + std::to_string(i + 1) + (name.empty() ? "" : " '" + name + "'");
  };
  auto enc_tables = config_.tables("encoder");
  if (enc_tables.empty()) throw ConfigError(config_.path() + ": no [[encoder]] is configured; add at least one");
  for (size_t i = 0; i < enc_tables.size(); ++i) {
    std::string slot = slot_label("encoder", i, "");
    auto lib = registry_.get(plugin_name(config_, *enc_tables[i], encoder_slot_schema(), slot), TSR_KIND_ENCODER,
                             slot + " at " + config_.path());
    Section sec = config_.resolve(*enc_tables[i], merged(encoder_slot_schema(), lib->schema(), slot), slot);
    std::string name = sec.get_string("name").empty() ? lib->name() : sec.get_string("name");
    for (const auto& e : encoders_)
      if (e->config().get_string("name") == name || (e->config().get_string("name").empty() && e->library().name() == name))
        throw ConfigError(sec.where("name").str() + ": two encoders are named '" + name + "'; give each a distinct name");
    seed_for_instance(static_cast<uint64_t>(experiment_.get_int("seed")), "encoder." + name);
    auto inst = std::make_unique<EncoderInstance>(lib, sec, slot_label("encoder", i, name) + " (" + lib->name() + ")");
    for (auto& [pname, tensor] : inst->parameters()) params_.add(name + "." + pname, tensor);
    encoders_.push_back(std::move(inst));
  }
  auto loss_tables = config_.tables("loss");
  if (loss_tables.empty()) throw ConfigError(config_.path() + ": no [[loss]] is configured; add at least one");
  for (size_t i = 0; i < loss_tables.size(); ++i) {
    std::string slot = slot_label("loss", i, "");
    auto lib = registry_.get(plugin_name(config_, *loss_tables[i], loss_slot_schema(), slot), TSR_KIND_LOSS,
                             slot + " at " + config_.path());
    Section sec = config_.resolve(*loss_tables[i], merged(loss_slot_schema(), lib->schema(), slot), slot);
    std::string name = sec.get_string("name").empty() ? lib->name() : sec.get_string("name");
    seed_for_instance(static_cast<uint64_t>(experiment_.get_int("seed")), "loss." + name);
    auto inst = std::make_unique<LossInstance>(lib, sec, slot_label("loss", i, name) + " (" + lib->name() + ")");
    for (auto& [pname, tensor] : inst->parameters()) params_.add(name + "." + pname, tensor);
    losses_.push_back(std::move(inst));
  }
  const toml::table& prec_table = config_.table("precision");
  const std::string slot = "[precision]";
  auto lib = registry_.get(plugin_name(config_, prec_table, precision_slot_schema(), slot), TSR_KIND_PRECISION,
                           slot + " at " + config_.path());
  Section sec = config_.resolve(prec_table, merged(precision_slot_schema(), lib->schema(), slot), slot);
  precision_ = std::make_unique<PrecisionInstance>(lib, sec, slot + " (" + lib->name() + ")", &states_);
  precision_info_ = precision_->describe();
  check_device_computes(precision_info_.param_dtype, "parameter");
  if (precision_info_.autocast_dtype != TSR_DTYPE_NONE) check_device_computes(precision_info_.autocast_dtype, "autocast");
}

void Experiment::check_device_computes(int32_t dtype, const char* role) const {
  const at::ScalarType t = to_scalar_type(dtype);
  if (t == at::kFloat || t == at::kDouble) return;
  // Try the two ops every encoder leans on, on a tiny problem, in that dtype on this device.
  try {
    auto o = at::TensorOptions().dtype(t).device(device_);
    at::Tensor x = at::ones({2, 1, 4, 4}, o), w = at::ones({2, 1, 3, 3}, o);
    at::conv2d(x, w);
    at::linear(at::ones({2, 3}, o), at::ones({4, 3}, o));
  } catch (const c10::Error& e) {
    throw ConfigError(precision_->config().where("plugin").str() + ": precision backend " + precision_->label() + " needs " +
                      role + " dtype " + c10::toString(t) + ", which LibTorch " + core_torch_version() +
                      " cannot compute on " + device_.str() + " (" + e.what_without_backtrace() +
                      "); choose another [precision] plugin or device");
  }
}

void Experiment::build_data() {
  const std::string& dir = data_.get_string("path");
  train_data_ = load_fashion_mnist(dir, "train", data_.get_int("train_limit"));
  test_data_ = load_fashion_mnist(dir, "test", data_.get_int("test_limit"));
  BatchLoader::Options o;
  o.batch_size = data_.get_int("batch_size");
  o.shuffle = data_.get_bool("shuffle");
  o.seed = static_cast<uint64_t>(experiment_.get_int("seed"));
  if (data_.get_bool("captions")) {
    captions_ = fashion_mnist_captions(data_.get_string("wordnet_path"), data_.get_int("heldout_captions"));
    o.captions = &captions_;
    o.caption_len = data_.get_int("caption_len");
    o.caption_key = data_.get_string("caption_key");
    // Zero-shot prompts: every class's held-out captions, in class order.
    std::vector<std::string> prompts;
    std::vector<int64_t> owner;
    for (size_t c = 0; c < captions_.size(); ++c)
      for (const auto& text : captions_[c].heldout) {
        prompts.push_back(text);
        owner.push_back(static_cast<int64_t>(c));
      }
    zero_shot_prompts_ = encode_caption_bytes(prompts, o.caption_len);
    zero_shot_owner_ = at::tensor(owner, at::kLong);
  }
  train_loader_ = std::make_unique<BatchLoader>(*train_data_, o);
  o.batch_size = data_.get_int("eval_batch_size");
  o.shuffle = false;
  o.captions = nullptr;
  test_loader_ = std::make_unique<BatchLoader>(*test_data_, o);
  if (!eval_.get_string("zero_shot_image").empty() && !zero_shot_prompts_.defined())
    throw ConfigError(eval_.where("zero_shot_image").str() + ": zero-shot evaluation needs [data] captions = true");
}

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
  for (const auto& s : states_.buffers)
    (s.category == TSR_STATE_MASTER ? master : states) += static_cast<double>(s.data.nbytes());
  return {{"parameters", p / n}, {"gradients", g / n}, {"master", master / n}, {"optimizer_states", states / n},
          {"total", (p + g + master + states) / n}};
}

std::string Experiment::describe() const {
  std::ostringstream o;
  for (const auto& e : encoders_) o << "encoder   " << e->label() << "  <- " << e->library().path() << "\n";
  for (const auto& l : losses_) o << "loss      " << l->label() << "  <- " << l->library().path() << "\n";
  o << "precision " << precision_->label() << "  <- " << precision_->library().path() << "\n";
  o << "optimizer " << optimizer_.get_string("name") << " lr " << optimizer_.get_float("lr") << ", schedule "
    << schedule_.get_string("decay") << " with " << schedule_.get_int("warmup_steps") << " warmup steps\n";
  return o.str();
}

// ---- one step ------------------------------------------------------------------------------
void Experiment::run_forward(TensorMap& batch) const {
  for (const auto& e : encoders_) e->forward(batch);  // each reads named inputs, writes outputs
}

namespace {
// All-gather of a batch tensor's rows with a gradient, as torch.distributed.nn.all_gather: the
// backward sums the gathered gradient over ranks and keeps this rank's rows. Every rank
// computes the loss of the whole global batch from the gathered rows (each with seeds carrying
// 1 / world size), so the sum over ranks is d(loss)/d(own rows), exactly once.
class AllGatherRows : public torch::autograd::Function<AllGatherRows> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rows, Comm* comm) {
    ctx->saved_data["comm"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));  // outlives the graph
    ctx->saved_data["rows"] = rows.size(0);
    return comm->all_gather_rows(rows);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* comm = reinterpret_cast<Comm*>(static_cast<intptr_t>(ctx->saved_data["comm"].toInt()));
    const int64_t rows = ctx->saved_data["rows"].toInt();
    at::Tensor g = grads[0].contiguous().clone();
    comm->all_reduce_sum(g);
    return {g.narrow(0, comm->rank() * rows, rows), at::Tensor()};
  }
};
}  // namespace

std::vector<Term> Experiment::compute_terms(const TensorMap& batch) const {
  std::vector<Term> terms;
  for (const auto& l : losses_) {
    size_t first = terms.size();
    const auto& gather = l->config().get_strings("gather");
    if (comm_ && !gather.empty()) {  // this loss sees the global batch (one rank: it already does)
      TensorMap global = batch;
      for (const auto& name : gather) {
        auto it = batch.find(name);
        if (it == batch.end())
          throw ConfigError(l->config().where("gather").str() + ": no batch tensor named '" + name + "' to gather for " +
                            l->label());
        global[name] = AllGatherRows::apply(it->second, comm_.get());
      }
      l->compute(global, terms);
    } else {
      l->compute(batch, terms);
    }
    for (size_t i = first; i < terms.size(); ++i) terms[i].weight *= l->config().get_float("weight");
  }
  return terms;
}

namespace {
at::Tensor l2_normalize(const at::Tensor& x) { return x / x.norm(2, {1}, true).clamp_min(1e-12); }
}  // namespace

double Experiment::grad_norm() const {
  double sq = 0;
  for (const auto& b : params_.buffers()) {
    const at::Tensor& g = b.grads;  // flat, contiguous
    const auto* bits = static_cast<const uint16_t*>(g.data_ptr());
    if (!g.device().is_cpu()) sq += g.to(at::kDouble).square().sum().item<double>();
    else if (g.scalar_type() == at::kFloat) sq += kernels::sum_squares_f32(g.data_ptr<float>(), g.numel());
    else if (g.scalar_type() == at::kBFloat16) sq += kernels::sum_squares_bf16(bits, g.numel());
    else if (g.scalar_type() == at::kHalf) sq += kernels::sum_squares_f16(bits, g.numel());
    else sq += g.to(at::kDouble).square().sum().item<double>();
  }
  if (params_.grads_partitioned()) {  // ZeRO-2: each rank holds one shard of the gradient
    at::Tensor t = at::full({1}, sq, at::kDouble);
    comm_->all_reduce_sum(t);
    sq = t.item<double>();
  }
  return std::sqrt(sq);
}

void Experiment::optimizer_step(int64_t step, double lr, double grad_scale) {
  tsr_optim_step opt{};
  opt.struct_size = sizeof(opt);
  opt.algorithm = optimizer_.get_string("name") == "sgd" ? TSR_OPTIM_SGD : TSR_OPTIM_ADAMW;
  opt.step = step;
  opt.lr = lr;
  opt.beta1 = optimizer_.get_float("beta1");
  opt.beta2 = optimizer_.get_float("beta2");
  opt.eps = optimizer_.get_float("eps");
  opt.momentum = optimizer_.get_float("momentum");
  opt.nesterov = optimizer_.get_bool("nesterov") ? 1 : 0;
  opt.weight_decay = optimizer_.get_float("weight_decay");
  opt.grad_scale = grad_scale;
  for (auto& buf : params_.buffers()) {
    const int64_t begin = shard_begin(buf, env_.rank), end = shard_end(buf, env_.rank);
    ShardView view(buf, precision_info_, OwnedRange{begin, end});
    precision_->step(view.shard, opt);
    if (!partitioned()) continue;
    // ZeRO-1: each rank updated its slice; every rank gets every slice back.
    for (int r = 0; r < env_.world_size; ++r) {
      at::Tensor slice = buf.params.narrow(0, shard_begin(buf, r), shard_end(buf, r) - shard_begin(buf, r));
      if (slice.numel() > 0) comm_->broadcast(slice, r);
    }
  }
}

namespace {
// Autocast for the forward pass and the losses, as torch.autocast(device, dtype) does.
class AutocastScope {
 public:
  AutocastScope(at::Device device, int32_t dtype) : active_(dtype != TSR_DTYPE_NONE), cpu_(device.is_cpu()) {
    if (!active_) return;
    const at::ScalarType t = to_scalar_type(dtype);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    const at::DeviceType dt = device.type();
    prev_enabled_ = at::autocast::is_autocast_enabled(dt);
    prev_dtype_ = at::autocast::get_autocast_dtype(dt);
    at::autocast::set_autocast_enabled(dt, true);
    at::autocast::set_autocast_dtype(dt, t);
#else
    prev_enabled_ = cpu_ ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
    prev_dtype_ = cpu_ ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
    if (cpu_) {
      at::autocast::set_cpu_enabled(true);
      at::autocast::set_autocast_cpu_dtype(t);
    } else {
      at::autocast::set_enabled(true);
      at::autocast::set_autocast_gpu_dtype(t);
    }
#endif
    at::autocast::increment_nesting();
    device_ = device.type();
  }
  ~AutocastScope() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(device_, prev_enabled_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
#else
    if (cpu_) {
      at::autocast::set_cpu_enabled(prev_enabled_);
      at::autocast::set_autocast_cpu_dtype(prev_dtype_);
    } else {
      at::autocast::set_enabled(prev_enabled_);
      at::autocast::set_autocast_gpu_dtype(prev_dtype_);
    }
#endif
  }

 private:
  bool active_, cpu_, prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
  at::DeviceType device_ = at::kCPU;
};
}  // namespace

StepOutcome Experiment::train_step(int64_t step, int64_t total_steps, TensorMap& batch) {
  const int64_t accum = train_.get_int("grad_accum");
  StepOutcome out;
  // 1. Forward and backward over `accum` micro-batches. Gradients accumulate in place in the
  //    flat buffer; each micro-batch's seeds are scaled by loss_scale / accum, so the step
  //    sees the mean gradient (times the loss scale, undone in the update).
  out.loss_scale = precision_->loss_scale();
  bool nonfinite = false;
  std::string nonfinite_msg;
  const int64_t world = env_.world_size;
  // Deterministic reduction: this rank's rows are cut into `per_rank` groups, each its own
  // backward pass; the seeds divide by the number of groups instead of accum * world.
  const int64_t groups = dist_.get_int("deterministic_groups");
  const int64_t per_rank = groups > 0 ? groups / world : 1;
  const double divisor = groups > 0 ? static_cast<double>(groups) : static_cast<double>(accum * world);
  for (int64_t micro = 0; micro < accum; ++micro) {
    train_loader_->next(batch);
    out.samples += batch.at(eval_.get_string("label")).size(0);
    if (world > 1) {  // every rank reads the global batch and keeps its own rows
      const int64_t rows = batch.begin()->second.size(0) / world;
      for (auto& [name, t] : batch) t = t.narrow(0, env_.rank * rows, rows);
    }
    if (reducer_) {
      // Stages 0/1 reduce during the step's last backward only and accumulate locally before;
      // stage 2 reduces every micro-batch, so no rank ever holds a whole gradient.
      reducer_->set_sync(params_.grads_partitioned() || micro + 1 == accum);
    }
    // One forward and backward over `part` (the micro-batch's rows, or one deterministic group).
    auto forward_backward = [&](TensorMap& part) {
      if (nonfinite) return;  // after a skip, still draw the step's batches: the data order stays fixed
      std::vector<Term> terms;
      {
        AutocastScope autocast(device_, precision_info_.autocast_dtype);
        run_forward(part);
        terms = compute_terms(part);
      }
      BackwardOptions bo;
      bo.loss_scale = out.loss_scale;
      bo.divisor = divisor;  // the mean over the global batch
      bo.step = step;
      // A gathered loss puts a collective into backward: the ranks must agree to skip it
      // together, or those that run it would wait for those that do not.
      if (gathers_) {
        bool finite = true;
        for (const auto& t : terms) finite = finite && at::isfinite(t.value).all().item<bool>();
        if (comm_->any(!finite) && finite) {
          nonfinite_msg = "another rank's loss is non-finite at step " + std::to_string(step);
          nonfinite = true;
          return;
        }
      }
      try {
        for (const auto& tv : engine_->backward(terms, bo))  // throws NonFiniteError for a non-finite term
          out.terms[tv.name] += tv.value / static_cast<double>(accum * per_rank);
      } catch (const NonFiniteError& e) {
        if (world == 1 && train_.get_string("nonfinite") != "skip") throw;
        nonfinite_msg = e.what();
        nonfinite = true;
      }
    };
    if (!tree_) {
      forward_backward(batch);
    } else {
      const int64_t rows = batch.begin()->second.size(0) / per_rank;
      for (int64_t g = 0; g < per_rank; ++g) {
        TensorMap part;
        for (auto& [name, t] : batch) part[name] = t.narrow(0, g * rows, rows);
        forward_backward(part);
        tree_->add_group();
      }
    }
    if (reducer_ && params_.grads_partitioned()) reducer_->finish();  // also after a skipped backward
    batch.clear();
  }
  out.lr = scheduled_lr(optimizer_, schedule_, step, total_steps);
  // 2. The accumulation boundary: every backward of this step has landed in the flat buffer,
  //    and (data parallel) every bucket is reduced. Ranks decide skips together.
  if (tree_) tree_->finish();
  if (comm_) {
    if (reducer_ && !params_.grads_partitioned()) reducer_->finish();
    if (comm_->any(nonfinite)) {
      if (train_.get_string("nonfinite") != "skip")
        throw NonFiniteError(nonfinite ? nonfinite_msg : "another rank's loss is non-finite at step " + std::to_string(step));
      nonfinite = true;
    }
    for (auto& [name, v] : out.terms) {  // log the global mean of each term
      at::Tensor t = at::full({1}, v / static_cast<double>(world), at::kDouble);
      comm_->all_reduce_sum(t);
      v = t.item<double>();
    }
  }
  if (nonfinite) {
    if (!nonfinite_msg.empty()) spdlog::warn("skipping step {}: {}", step, nonfinite_msg);
    if (engine_->backward_passes() > 0) engine_->finish_step();
    params_.zero_grad();
    out.skipped = true;
    return out;
  }
  StepStats st = engine_->finish_step();
  if (!st.unused_params.empty() && !warned_unused_) {
    warned_unused_ = true;
    spdlog::warn("{} parameter(s) received no gradient in step {} (first: {})", st.unused_params.size(), step,
                 params_.named_parameters()[st.unused_params.front()].first);
  }
  // 3. Loss scaling: the backend checks for overflow and may drop the step (and lower its scale).
  bool found_inf = false;
  for (auto& buf : params_.buffers()) {
    ShardView view(buf, precision_info_, OwnedRange{shard_begin(buf, env_.rank), shard_end(buf, env_.rank)});
    found_inf = precision_->find_overflow(view.shard) || found_inf;
  }
  if (comm_) found_inf = comm_->any(found_inf);  // decided globally
  if (precision_->update_scale(found_inf)) {
    params_.zero_grad();
    out.skipped = true;
    return out;
  }
  // 4. Global-norm clipping and unscaling, both folded into the update's gradient scale.
  const double clip = train_.get_float("clip_grad_norm");
  out.grad_norm = grad_norm() / out.loss_scale;
  const double clip_factor = (clip > 0 && out.grad_norm > clip) ? clip / (out.grad_norm + 1e-6) : 1.0;
  optimizer_step(step, out.lr, clip_factor / out.loss_scale);
  params_.zero_grad();
  return out;
}

TrainSummary Experiment::train() {
  try {
    return train_loop();
  } catch (const std::exception& e) {
    // Peers whose next collective fails then report this rank's own reason.
    if (comm_) comm_->record_exit(e.what());
    throw;
  }
}

TrainSummary Experiment::train_loop() {
  if (!train_loader_) throw Error("experiment was built without data; cannot train");
  // Outputs (metrics, progress, model, checkpoints, evaluation) belong to rank 0; with data
  // parallelism every rank holds the same weights.
  const bool main = env_.rank == 0;
  if (main) {
    fs::create_directories(output_dir_);
    std::ofstream(output_dir_ + "/config.resolved.toml") << config_.dump();
  }
  // Resume first: it decides where the loop starts and whether metrics are appended.
  CheckpointMeta resumed;
  const bool resuming = !checkpoint_.get_string("resume").empty();
  if (resuming) resumed = resume_from(checkpoint_.get_string("resume"));
  std::optional<MetricsWriter> metrics;
  if (main) metrics.emplace(output_dir_ + "/metrics.jsonl", /*append=*/resuming);
  ProgressLine progress;
  const int64_t accum = train_.get_int("grad_accum");
  const int64_t epochs = train_.get_int("epochs");
  const int64_t steps_per_epoch = train_loader_->batches_per_epoch() / accum;
  int64_t total_steps = steps_per_epoch * epochs;
  if (train_.get_int("max_steps") > 0) total_steps = std::min(total_steps, train_.get_int("max_steps"));
  const int64_t log_every = train_.get_int("log_every");

  spdlog::info("model: {} parameters in {} flat buffer(s); {} optimizer steps ({} per epoch x {} epochs)",
               params_.num_params(), params_.buffers().size(), total_steps, steps_per_epoch, epochs);
  std::string mem;
  for (const auto& [cat, b] : bytes_per_param()) mem += fmt::format(" {} {:.2f}", cat, b);
  spdlog::info("model-state bytes/param:{}", mem);

  TrainSummary summary;
  summary.output_dir = output_dir_;
  const auto t0 = std::chrono::steady_clock::now();
  auto window_start = t0;
  int64_t step = resumed.step, window_samples = 0, window_steps = 0;
  summary.skipped_steps = resumed.skipped_steps;
  std::map<std::string, double> window_terms;
  double window_loss = 0, last_norm = 0, lr = 0, last_scale = 1;
  const int64_t every = checkpoint_.get_int("every_steps");
  bool done = step >= total_steps;
  for (int64_t epoch = resumed.epoch; epoch < epochs && !done; ++epoch) {
    train_loader_->start_epoch(epoch);
    const int64_t first = epoch == resumed.epoch ? resumed.batch / accum : 0;
    train_loader_->seek(first * accum);
    for (auto& e : encoders_) e->set_training(true);
    TensorMap batch;
    bool save_after_eval = false;
    for (int64_t s = first; s < steps_per_epoch && !done; ++s) {
      ++step;
      StepOutcome out = train_step(step, total_steps, batch);
      window_samples += out.samples;
      lr = out.lr;
      if (out.skipped) {
        ++summary.skipped_steps;
        if (step >= total_steps) done = true;
        continue;
      }
      for (const auto& [name, v] : out.terms) {
        window_terms[name] += v;
        window_loss += v;
      }
      last_norm = out.grad_norm;
      last_scale = out.loss_scale;
      ++window_steps;

      if (step % log_every == 0 || step == total_steps) {
        const auto now = std::chrono::steady_clock::now();
        const double secs = std::chrono::duration<double>(now - window_start).count();
        nlohmann::json rec = {{"step", step}, {"epoch", epoch + 1}, {"loss", window_loss / window_steps}, {"lr", lr},
                              {"grad_norm", last_norm}, {"samples_per_s", window_samples / std::max(secs, 1e-9)},
                              {"elapsed_s", std::chrono::duration<double>(now - t0).count()}};
        for (const auto& [name, v] : window_terms) rec["loss/" + name] = v / window_steps;
        rec["skipped_steps"] = summary.skipped_steps;
        rec["loss_scale"] = last_scale;
        if (main) metrics->write(rec);
        summary.final_loss = window_loss / window_steps;
        if (main) progress.update(fmt::format("epoch {}/{}  step {}/{}  loss {:.4f}  lr {:.2e}  {:.0f} samples/s", epoch + 1,
                                    epochs, step, total_steps, window_loss / window_steps, lr,
                                    window_samples / std::max(secs, 1e-9)));
        window_start = now;
        window_samples = window_steps = 0;
        window_loss = 0;
        window_terms.clear();
      }
      if (step >= total_steps) done = true;
      if (every > 0 && (step % every == 0 || done)) {
        // At an epoch's last step the checkpoint waits for the evaluation, so a resumed run
        // starts cleanly at the next epoch.
        if (s + 1 == steps_per_epoch) save_after_eval = true;
        else save_checkpoint_at(step, epoch, (s + 1) * accum, summary.skipped_steps);
      }
    }
    summary.epochs = epoch + 1;
    if (eval_.get_bool("enabled") && main) {
      progress.finish();
      EvalResult ev = evaluate();
      summary.eval_accuracy = ev.accuracy;
      summary.zero_shot_accuracy = ev.zero_shot_accuracy;
      nlohmann::json rec = {{"eval", true}, {"step", step}, {"epoch", epoch + 1},
                            {"elapsed_s", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
      std::string line = fmt::format("epoch {}:", epoch + 1);
      if (ev.accuracy >= 0) {
        rec["eval_accuracy"] = ev.accuracy;
        rec["eval_loss"] = ev.loss;
        line += fmt::format(" test accuracy {:.2f}%  test loss {:.4f}", 100.0 * ev.accuracy, ev.loss);
      }
      if (ev.zero_shot_accuracy >= 0) {
        rec["zero_shot_accuracy"] = ev.zero_shot_accuracy;
        line += fmt::format("  zero-shot accuracy {:.2f}%", 100.0 * ev.zero_shot_accuracy);
      }
      metrics->write(rec);
      spdlog::info("{}", line);
    }
    if (save_after_eval) save_checkpoint_at(step, epoch + 1, 0, summary.skipped_steps);
  }
  progress.finish();
  summary.steps = step;
  summary.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (train_.get_bool("save_model") && main) save_model(output_dir_ + "/model.safetensors");
  if (reducer_ && params_.grads_partitioned()) {
    // Measured, not derived: what ZeRO-2 held beyond its gradient shard while reducing.
    const double per_param = static_cast<double>(reducer_->peak_staging_bytes()) /
                             static_cast<double>(std::max<int64_t>(params_.num_params(), 1));
    spdlog::info("ZeRO-2 gradient staging: peak {:.2f} MiB ({:.2f} bytes/param) beyond the gradient shard, bucket_mb {}",
                 static_cast<double>(reducer_->peak_staging_bytes()) / (1 << 20), per_param, dist_.get_float("bucket_mb"));
  }
  spdlog::info("done: {} steps in {:.1f} s; outputs in {}", step, summary.train_seconds, output_dir_);
  return summary;
}

EvalResult Experiment::evaluate() {
  for (auto& e : encoders_) e->set_training(false);
  at::NoGradGuard no_grad;
  test_loader_->start_epoch(0);
  TensorMap batch;
  int64_t correct = 0, zs_correct = 0, seen = 0;
  double loss_sum = 0;
  const std::string& logits_key = eval_.get_string("logits");
  const std::string& label_key = eval_.get_string("label");
  const std::string& zs_image = eval_.get_string("zero_shot_image");
  const std::string& zs_text = eval_.get_string("zero_shot_text");
  auto output = [&](const std::string& key, const char* what) -> at::Tensor {
    auto it = batch.find(key);
    if (it == batch.end())
      throw ConfigError(eval_.where(what).str() + ": no encoder wrote a tensor named '" + key + "'");
    return it->second.to(at::kFloat);
  };
  while (test_loader_->next(batch)) {
    if (!zs_image.empty()) batch[data_.get_string("caption_key")] = zero_shot_prompts_.to(device_);
    {
      AutocastScope autocast(device_, precision_info_.autocast_dtype);
      run_forward(batch);
    }
    at::Tensor label = batch.at(label_key).to(device_);
    if (!logits_key.empty()) {
      at::Tensor logits = output(logits_key, "logits");
      correct += logits.argmax(1).eq(label).sum().item<int64_t>();
      loss_sum += at::cross_entropy_loss(logits, label, {}, at::Reduction::Sum).item<double>();
    }
    if (!zs_image.empty()) {
      // Class embedding = normalised mean of the normalised held-out caption embeddings.
      at::Tensor img = l2_normalize(output(zs_image, "zero_shot_image"));
      at::Tensor txt = l2_normalize(output(zs_text, "zero_shot_text"));
      const int64_t classes = zero_shot_owner_.max().item<int64_t>() + 1;
      at::Tensor sums = at::zeros({classes, txt.size(1)}, txt.options()).index_add_(0, zero_shot_owner_.to(device_), txt);
      at::Tensor cls = l2_normalize(sums);
      zs_correct += at::matmul(img, cls.t()).argmax(1).eq(label).sum().item<int64_t>();
    }
    seen += label.size(0);
    batch.clear();
  }
  for (auto& e : encoders_) e->set_training(true);
  EvalResult r;
  if (seen && !logits_key.empty()) {
    r.accuracy = static_cast<double>(correct) / seen;
    r.loss = loss_sum / seen;
  }
  if (seen && !zs_image.empty()) r.zero_shot_accuracy = static_cast<double>(zs_correct) / seen;
  return r;
}

std::vector<std::pair<std::string, at::Tensor>> Experiment::encoder_buffers() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& e : encoders_) {
    const std::string& n = e->config().get_string("name");
    const std::string prefix = (n.empty() ? e->library().name() : n) + ".";
    for (auto& [name, t] : e->buffers()) out.emplace_back(prefix + name, t);
  }
  return out;
}

std::string Experiment::checkpoint_dir() const {
  const std::string& d = checkpoint_.get_string("dir");
  return d.empty() ? output_dir_ + "/checkpoints" : d;
}

std::vector<OwnedRange> Experiment::owned_ranges() const {
  std::vector<OwnedRange> r;
  for (const auto& b : params_.buffers()) r.push_back({shard_begin(b, env_.rank), shard_end(b, env_.rank)});
  return r;
}

void Experiment::save_checkpoint_at(int64_t step, int64_t epoch, int64_t batch, int64_t skipped) {
  CheckpointMeta meta;
  meta.step = step;
  meta.epoch = epoch;
  meta.batch = batch;
  meta.skipped_steps = skipped;
  meta.precision = precision_->library().name();
  meta.master_policy = precision_info_.master_policy;
  meta.optimizer = optimizer_.get_string("name");
  meta.config_toml = config_.dump();
  meta.config_hash = std::to_string(std::hash<std::string>{}(meta.config_toml));
  // Every rank writes the pieces it owns (ZeRO-1: its slice of the optimizer state; rank 0
  // also the shared parts), then rank 0 publishes the whole checkpoint at once.
  const std::string dir = checkpoint_dir();
  write_checkpoint_part(dir, step, env_.rank,
                        gather_checkpoint(params_, states_, *precision_, owned_ranges(), encoder_buffers(),
                                          /*write_shared=*/env_.rank == 0));
  if (comm_) comm_->barrier();
  if (env_.rank == 0) publish_checkpoint(dir, meta, env_.world_size, checkpoint_.get_int("keep"));
  if (comm_) comm_->barrier();
}

CheckpointMeta Experiment::resume_from(const std::string& spec) {
  const std::string path = resolve_checkpoint_path(checkpoint_dir(), spec);
  std::map<std::string, at::Tensor> tensors;
  CheckpointMeta meta = read_checkpoint(path, tensors);
  if (meta.optimizer != optimizer_.get_string("name"))
    spdlog::warn("checkpoint {} was written with optimizer {}, this run uses {}", path, meta.optimizer,
                 optimizer_.get_string("name"));
  restore_checkpoint(tensors, params_, states_, *precision_, owned_ranges(), encoder_buffers(), path);
  if (meta.precision != precision_->library().name())
    spdlog::info("checkpoint {} was written by precision backend '{}'; converted to '{}'", path, meta.precision,
                 precision_->library().name());
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

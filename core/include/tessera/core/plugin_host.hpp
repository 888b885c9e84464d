// tessera/core/plugin_host.hpp — the core's side of the ABI: the host table it hands each
// plugin instance, and C++ wrappers (EncoderInstance, LossInstance, PrecisionInstance).
#pragma once
#include <tessera/abi.h>

#include <ATen/ATen.h>

#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "tessera/core/config.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "tessera/core/tensor_map.hpp"

namespace tessera {


// One loss term as the dispatcher sees it.
struct Term {
  std::string name;
  std::string plugin;  // instance label of the loss reducer that emitted it
  at::Tensor value;    // any shape; in the autograd graph
  at::Tensor grad;     // undefined: implicit one (scalar value only); else same shape as value
  double weight = 1.0;
  std::optional<double> logged;  // the scalar loss for metrics, when the plugin gives one
  bool per_unit = false;         // TSR_NORMALIZE_UNITS: value is a sum over units (tokens)
  size_t loss = 0;               // index of the [[loss]] that emitted it (whose units divide it)
};

// A buffer a precision backend allocated through the host (optimizer states, masters).
struct StateBuffer {
  std::string name;
  int32_t category;  // TSR_STATE_*
  at::Tensor data;   // (numel,) 1-D, contiguous
};

// Where a precision backend's alloc_state puts its buffers (owned by the trainer).
struct StateStore {
  at::Device device = at::kCPU;
  std::vector<StateBuffer> buffers;
};

at::ScalarType to_scalar_type(int32_t tsr_dtype);  // throws Error on an unknown code
int32_t to_tsr_dtype(at::ScalarType t);            // TSR_DTYPE_NONE when not representable

// Wraps an at::Tensor in a new handle (refcount 1); the core's side of tensor_wrap_aten.
tsr_tensor* wrap_tensor(const at::Tensor& t);
void release_tensor(tsr_tensor* t);
const at::Tensor& unwrap_tensor(const tsr_tensor* t);

// The state behind one instance's host table (and the table itself).
class HostContext;

// Base of the instance wrappers: owns the instance, its config and its host table, and
// keeps the library loaded while it lives.
class PluginInstance {
 public:
  PluginInstance(std::shared_ptr<PluginLibrary> lib, Section config, std::string label,
                 StateStore* states = nullptr);
  virtual ~PluginInstance();
  PluginInstance(const PluginInstance&) = delete;
  PluginInstance& operator=(const PluginInstance&) = delete;

  const std::string& label() const { return label_; }  // "[[encoder]] #1 'image' (convnet)"
  const PluginLibrary& library() const { return *lib_; }
  const Section& config() const;

 protected:
  // Throws PluginError "<label>: <what> failed: <plugin's message>" for a non-OK status.
  void check(tsr_status s, const char* what) const;
  const void* vtable(size_t min_size) const;
  tsr_instance* raw() const { return inst_; }
  HostContext& ctx() const { return *ctx_; }

 private:
  std::shared_ptr<PluginLibrary> lib_;
  std::unique_ptr<HostContext> ctx_;
  std::string label_;
  tsr_instance* inst_ = nullptr;
};

class EncoderInstance : public PluginInstance {
 public:
  using PluginInstance::PluginInstance;
  std::vector<std::pair<std::string, at::Tensor>> parameters() const;
  // Non-trained state for checkpoints (empty when the plugin declares none).
  std::vector<std::pair<std::string, at::Tensor>> buffers() const;
  void set_training(bool training) const;
  void forward(TensorMap& batch) const;
  // Model FLOPs of forward + backward over `batch` (after forward), when the plugin counts them.
  std::optional<double> flops(const TensorMap& batch) const;
};

class LossInstance : public PluginInstance {
 public:
  using PluginInstance::PluginInstance;
  // Appends the terms this reducer emits for `batch`.
  void compute(const TensorMap& batch, std::vector<Term>& terms) const;
  // The loss's own trainable parameters (empty when its table has none).
  std::vector<std::pair<std::string, at::Tensor>> parameters() const;
  // The units (tokens) of `batch` its TSR_NORMALIZE_UNITS terms sum over; nullopt when the
  // loss has no count_units, -1 when this instance emits only mean terms.
  std::optional<int64_t> count_units(const TensorMap& batch) const;
  bool has_count_units() const;
};

class PrecisionInstance : public PluginInstance {
 public:
  using PluginInstance::PluginInstance;
  tsr_precision_info describe() const;
  // 1.0 style: the backend's init_shard (it allocates states for every optimizer it knows).
  void init_shard(const tsr_flat_shard& shard) const;
  // init_shard_for(shard, opt) when the backend has it (ABI 1.1), else the 1.0 init_shard.
  void init_shard(const tsr_flat_shard& shard, const tsr_optim_step& opt) const;
  void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) const;
  // Whether the backend converts its own master to and from fp32 (export/import_master, 1.1).
  bool has_master_io() const;
  // The shard's exact fp32 master into out_f32 ((shard.numel,) f32, the shard's device,
  // contiguous). Without master io: the parameters widened to fp32.
  void export_master(const tsr_flat_shard& shard, const at::Tensor& out_f32) const;
  // Sets the shard's master and parameters from in_f32 ((shard.numel,) f32). Without master
  // io: the parameters cast from the values, with one warning that the master is not exact.
  void import_master(const tsr_flat_shard& shard, const at::Tensor& in_f32) const;
  // Loss scaling; a backend without it reports 1, no overflow, no skip.
  double loss_scale() const;
  bool find_overflow(const tsr_flat_shard& shard) const;
  bool update_scale(bool found_inf) const;  // true: skip this step's update

 private:
  mutable bool warned_inexact_import_ = false;
};

// A dataset's field and split as the core keeps them (tsr_field_info / tsr_split_info).
struct FieldSpec {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;  // of one example; -1 = varies
  double pad_value = 0.0;
  std::string doc;
  bool varies() const;  // any dim is -1
  std::string shape_str() const;  // "(1, 28, 28)", "(-1)"
};
struct SplitSpec {
  std::string name;
  int64_t size = 0;
};

class DatasetInstance : public PluginInstance {
 public:
  // Creates the instance and reads its splits and fields once; refuses (PluginError naming the
  // plugin) a dataset without splits or fields, two of one name, a bad dtype or ndim > 8.
  DatasetInstance(std::shared_ptr<PluginLibrary> lib, Section config, std::string label);
  const std::vector<SplitSpec>& splits() const { return splits_; }
  const std::vector<FieldSpec>& fields() const { return fields_; }
  // The split called `name`; a ConfigError at `where` listing the splits there are.
  const SplitSpec& split(const std::string& name, const std::string& where) const;
  // ANY thread: example `index` of `split`, checked against the fields (every field present,
  // its dtype, ndim and fixed sizes); a PluginError names the plugin, split, index and field.
  TensorMap get(const std::string& split, int64_t index, int64_t epoch, uint64_t seed) const;
  // Named metadata tensors (training thread); nullopt when the dataset has none by that name.
  std::optional<TensorMap> metadata(const std::string& name) const;
  // A named list of strings (any thread); empty when the dataset has none.
  std::vector<std::string> metadata_text(const std::string& name) const;
  // A text field's tokenizer; PluginError when the dataset has none.
  bool has_tokenizer() const;
  at::Tensor encode_text(const std::string& field, const std::string& text) const;
  std::string decode_text(const std::string& field, const at::Tensor& ids) const;

 private:
  std::vector<SplitSpec> splits_;
  std::vector<FieldSpec> fields_;
};

}  // namespace tessera

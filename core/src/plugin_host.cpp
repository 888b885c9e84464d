// core/src/plugin_host.cpp — implements the host table (tensor handles, DLPack, config
// access, term sink, state buffers) and the instance wrappers that call plugin vtables.
#include "tessera/core/plugin_host.hpp"

#include <ATen/DLConvertor.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <type_traits>

#include <spdlog/spdlog.h>

#include "tessera/core/error.hpp"

// ---- the opaque handle types, as the core defines them ------------------------------------
struct tsr_tensor {
  std::atomic<int64_t> refs{1};
  at::Tensor t;
};
// A batch lent to one forward/compute call. set_get's handles are borrowed from the set: it
// releases them when the call ends (its destructor), whichever thread asked for them.
struct tsr_tensor_set {
  tsr_tensor_set(tessera::TensorMap* map, bool read_only) : map(map), read_only(read_only) {}
  ~tsr_tensor_set();
  tsr_tensor_set(const tsr_tensor_set&) = delete;
  tsr_tensor_set& operator=(const tsr_tensor_set&) = delete;
  tessera::TensorMap* map;
  bool read_only;
  std::mutex mu;                     // guards map and lent (plugins may call from any thread)
  std::vector<tsr_tensor*> lent;     // handles set_get gave out during this call
};
struct tsr_term_sink {
  std::vector<tessera::Term>* terms;
  std::string plugin;
  std::mutex mu;
};
struct tsr_config {
  const tessera::Section* section;
};

namespace tessera {

namespace {
thread_local std::string t_last_error;
}

class HostContext {
 public:
  HostContext(std::shared_ptr<PluginLibrary> lib, Section config, std::string label, StateStore* states)
      : lib(std::move(lib)), section(std::move(config)), label(std::move(label)), states(states) {
    cfg.section = &section;
    host = tsr_host{};
    host.struct_size = sizeof(tsr_host);
    host.abi_major = TSR_ABI_MAJOR;
    host.abi_minor = TSR_ABI_MINOR;
    host.ctx = reinterpret_cast<tsr_host_ctx*>(this);
    host.log = &log;
    host.set_error = &set_error;
    host.config_get_int = &get_int;
    host.config_get_float = &get_float;
    host.config_get_bool = &get_bool;
    host.config_get_string = &get_string;
    host.config_get_string_array_size = &get_strings_size;
    host.config_get_string_array_item = &get_strings_item;
    host.tensor_retain = [](tsr_tensor* t) {
      if (t) t->refs.fetch_add(1, std::memory_order_relaxed);
    };
    host.tensor_release = &release_tensor;
    host.tensor_dtype = [](const tsr_tensor* t) { return to_tsr_dtype(t->t.scalar_type()); };
    host.tensor_ndim = [](const tsr_tensor* t) { return static_cast<int64_t>(t->t.dim()); };
    host.tensor_size = [](const tsr_tensor* t, int64_t d) {
      return d >= 0 && d < t->t.dim() ? t->t.size(d) : int64_t{-1};
    };
    host.tensor_numel = [](const tsr_tensor* t) { return static_cast<int64_t>(t->t.numel()); };
    host.tensor_data = [](tsr_tensor* t) -> void* { return t->t.is_contiguous() ? t->t.data_ptr() : nullptr; };
    host.tensor_to_dlpack = &to_dlpack;
    host.tensor_from_dlpack = &from_dlpack;
    host.set_get = &set_get;
    host.set_put = &set_put;
    host.emit_term = &emit_term;
    host.alloc_state = &alloc_state;
    host.torch_version = core_torch_version();
    host.tensor_aten = [](const tsr_tensor* t) -> const void* { return &t->t; };
    host.tensor_wrap_aten = [](const void* p) { return wrap_tensor(*static_cast<const at::Tensor*>(p)); };
  }

  std::shared_ptr<PluginLibrary> lib;
  Section section;
  std::string label;
  StateStore* states;
  tsr_config cfg{};
  tsr_host host{};

 private:
  static HostContext* self(tsr_host_ctx* c) { return reinterpret_cast<HostContext*>(c); }

  static void log(tsr_host_ctx* c, int32_t level, const char* msg) {
    const std::string& who = self(c)->label;
    switch (level) {
      case TSR_LOG_DEBUG: spdlog::debug("{}: {}", who, msg); break;
      case TSR_LOG_WARN: spdlog::warn("{}: {}", who, msg); break;
      case TSR_LOG_ERROR: spdlog::error("{}: {}", who, msg); break;
      default: spdlog::info("{}: {}", who, msg);
    }
  }
  static void set_error(tsr_host_ctx*, const char* msg) { t_last_error = msg ? msg : ""; }

  template <class F>
  static tsr_status config_read(const tsr_config* cfg, const char* key, F&& f) {
    if (!cfg || !key) return TSR_ERR_INVALID_ARGUMENT;
    if (!cfg->section->has(key)) {
      t_last_error = std::string("config key '") + key + "' is not in the plugin's schema";
      return TSR_ERR_NOT_FOUND;
    }
    try {
      f(*cfg->section);
      return TSR_OK;
    } catch (const std::exception& e) {
      t_last_error = e.what();
      return TSR_ERR_TYPE;
    }
  }
  static tsr_status get_int(const tsr_config* cfg, const char* key, int64_t* out) {
    return config_read(cfg, key, [&](const Section& s) { *out = s.get_int(key); });
  }
  static tsr_status get_float(const tsr_config* cfg, const char* key, double* out) {
    return config_read(cfg, key, [&](const Section& s) { *out = s.get_float(key); });
  }
  static tsr_status get_bool(const tsr_config* cfg, const char* key, int32_t* out) {
    return config_read(cfg, key, [&](const Section& s) { *out = s.get_bool(key) ? 1 : 0; });
  }
  static tsr_status get_string(const tsr_config* cfg, const char* key, const char** out) {
    return config_read(cfg, key, [&](const Section& s) { *out = s.get_string(key).c_str(); });
  }
  static tsr_status get_strings_size(const tsr_config* cfg, const char* key, int64_t* out) {
    return config_read(cfg, key, [&](const Section& s) { *out = static_cast<int64_t>(s.get_strings(key).size()); });
  }
  static tsr_status get_strings_item(const tsr_config* cfg, const char* key, int64_t i, const char** out) {
    return config_read(cfg, key, [&](const Section& s) { *out = s.get_strings(key).at(static_cast<size_t>(i)).c_str(); });
  }

  static tsr_status to_dlpack(tsr_tensor* t, DLManagedTensor** out) {
    if (!t || !out) return TSR_ERR_INVALID_ARGUMENT;
    try {
      *out = at::toDLPack(t->t);
      return TSR_OK;
    } catch (const std::exception& e) {
      t_last_error = e.what();
      return TSR_ERR_UNSUPPORTED;
    }
  }
  static tsr_status from_dlpack(tsr_host_ctx* c, DLManagedTensor* src, tsr_tensor** out) {
    if (!src || !out) return TSR_ERR_INVALID_ARGUMENT;
    // Keep the plugin's library loaded until the tensor (and its deleter) is gone.
    std::shared_ptr<PluginLibrary> keep = c ? self(c)->lib : nullptr;
    try {
      at::Tensor t = at::fromDLPack(src);
      // fromDLPack owns src now; tie the library's lifetime to the storage as well.
      auto storage_keeper = std::make_shared<std::shared_ptr<PluginLibrary>>(std::move(keep));
      at::Tensor held = at::from_blob(
          t.data_ptr(), t.sizes(), t.strides(), [t, storage_keeper](void*) mutable { t.reset(); storage_keeper.reset(); },
          t.options());
      *out = wrap_tensor(held);
      return TSR_OK;
    } catch (const std::exception& e) {
      t_last_error = e.what();
      return TSR_ERR_INVALID_ARGUMENT;
    }
  }
  static tsr_tensor* set_get(const tsr_tensor_set* cs, const char* name) {
    if (!cs || !name) return nullptr;
    auto* s = const_cast<tsr_tensor_set*>(cs);  // the lending record is the set's, not the batch's
    std::lock_guard<std::mutex> lock(s->mu);
    auto it = s->map->find(name);
    if (it == s->map->end()) return nullptr;
    tsr_tensor* h = wrap_tensor(it->second);
    s->lent.push_back(h);
    return h;
  }
  static tsr_status set_put(tsr_tensor_set* s, const char* name, tsr_tensor* t) {
    if (!s || !name || !t) return TSR_ERR_INVALID_ARGUMENT;
    if (s->read_only) {
      t_last_error = std::string("cannot store '") + name + "': this batch is read-only here";
      return TSR_ERR_INVALID_ARGUMENT;
    }
    std::lock_guard<std::mutex> lock(s->mu);
    (*s->map)[name] = t->t;
    return TSR_OK;
  }
  static tsr_status emit_term(tsr_term_sink* sink, const tsr_term* term) {
    // A 1.2 plugin's term ends before `normalize` (then a mean term).
    if (!sink || !term || term->struct_size < offsetof(tsr_term, normalize) || !term->name || !term->tensor) {
      t_last_error = "emit_term: term is NULL, too small, or lacks a name or tensor";
      return TSR_ERR_INVALID_ARGUMENT;
    }
    Term t;
    t.name = term->name;
    t.plugin = sink->plugin;
    t.value = term->tensor->t;
    if (term->grad) t.grad = term->grad->t;
    t.weight = term->weight;
    if (term->has_value) t.logged = term->value;
    if (term->struct_size >= offsetof(tsr_term, normalize) + sizeof(term->normalize)) {
      if (term->normalize != TSR_NORMALIZE_MEAN && term->normalize != TSR_NORMALIZE_UNITS) {
        t_last_error = "emit_term: term '" + std::string(term->name) + "' has normalize = " +
                       std::to_string(term->normalize) + " (TSR_NORMALIZE_MEAN 0 or TSR_NORMALIZE_UNITS 1)";
        return TSR_ERR_INVALID_ARGUMENT;
      }
      t.per_unit = term->normalize == TSR_NORMALIZE_UNITS;
    }
    std::lock_guard<std::mutex> lock(sink->mu);
    sink->terms->push_back(std::move(t));
    return TSR_OK;
  }
  static tsr_status alloc_state(tsr_host_ctx* c, const char* name, int32_t category, int32_t dtype,
                                int64_t numel, tsr_tensor** out) {
    HostContext* h = self(c);
    if (!h->states) {
      t_last_error = "alloc_state is only available to precision backends";
      return TSR_ERR_UNSUPPORTED;
    }
    if (!name || numel < 0 || !out ||
        (category != TSR_STATE_OPTIMIZER && category != TSR_STATE_MASTER && category != TSR_STATE_SCALARS))
      return TSR_ERR_INVALID_ARGUMENT;
    for (const auto& b : h->states->buffers)
      if (b.name == name) {
        t_last_error = std::string("state buffer '") + name + "' already exists";
        return TSR_ERR_INVALID_ARGUMENT;
      }
    try {
      // Scalars live in host memory, so the backend reads and writes them without a device sync.
      const at::Device device = category == TSR_STATE_SCALARS ? at::Device(at::kCPU) : h->states->device;
      at::Tensor data = at::zeros({numel}, at::TensorOptions().dtype(to_scalar_type(dtype)).device(device));
      h->states->buffers.push_back({name, category, data});
      *out = wrap_tensor(data);
      return TSR_OK;
    } catch (const std::exception& e) {
      t_last_error = e.what();
      return TSR_ERR_OUT_OF_MEMORY;
    }
  }
};


at::ScalarType to_scalar_type(int32_t d) {
  switch (d) {
    case TSR_DTYPE_F32: return at::kFloat;
    case TSR_DTYPE_F64: return at::kDouble;
    case TSR_DTYPE_F16: return at::kHalf;
    case TSR_DTYPE_BF16: return at::kBFloat16;
    case TSR_DTYPE_I64: return at::kLong;
    case TSR_DTYPE_I32: return at::kInt;
    case TSR_DTYPE_U8: return at::kByte;
    case TSR_DTYPE_BOOL: return at::kBool;
    case TSR_DTYPE_I16: return at::kShort;
  }
  throw Error("unknown tessera dtype code " + std::to_string(d));
}

int32_t to_tsr_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return TSR_DTYPE_F32;
    case at::kDouble: return TSR_DTYPE_F64;
    case at::kHalf: return TSR_DTYPE_F16;
    case at::kBFloat16: return TSR_DTYPE_BF16;
    case at::kLong: return TSR_DTYPE_I64;
    case at::kInt: return TSR_DTYPE_I32;
    case at::kByte: return TSR_DTYPE_U8;
    case at::kBool: return TSR_DTYPE_BOOL;
    case at::kShort: return TSR_DTYPE_I16;
    default: return TSR_DTYPE_NONE;
  }
}

tsr_tensor* wrap_tensor(const at::Tensor& t) {
  auto* h = new tsr_tensor;
  h->t = t;
  return h;
}
void release_tensor(tsr_tensor* t) {
  if (t && t->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete t;
}
}  // namespace tessera

tsr_tensor_set::~tsr_tensor_set() {
  for (tsr_tensor* h : lent) tessera::release_tensor(h);
}

namespace tessera {
const at::Tensor& unwrap_tensor(const tsr_tensor* t) { return t->t; }

// ---- instance wrappers ----------------------------------------------------------------------
PluginInstance::PluginInstance(std::shared_ptr<PluginLibrary> lib, Section config, std::string label,
                               StateStore* states)
    : lib_(lib), ctx_(std::make_unique<HostContext>(lib, std::move(config), label, states)), label_(std::move(label)) {
  tsr_instance* inst = nullptr;
  tsr_status s = lib_->descriptor().create(&ctx_->host, &ctx_->cfg, &inst);
  if (s != TSR_OK || !inst)
    throw PluginError(label_ + ": plugin " + lib_->label() + " failed to create its instance: " +
                      (t_last_error.empty() ? "status " + std::to_string(s) : t_last_error));
  inst_ = inst;
}

PluginInstance::~PluginInstance() {
  if (inst_) lib_->descriptor().destroy(inst_);
}

const Section& PluginInstance::config() const { return ctx_->section; }

void PluginInstance::check(tsr_status s, const char* what) const {
  if (s == TSR_OK) return;
  std::string msg = t_last_error.empty() ? "status " + std::to_string(s) : t_last_error;
  t_last_error.clear();
  throw PluginError(label_ + ": " + what + " failed: " + msg);
}

const void* PluginInstance::vtable(size_t min_size) const {
  const void* v = lib_->descriptor().vtable;
  uint32_t size = *static_cast<const uint32_t*>(v);
  if (size < min_size)
    throw PluginError(label_ + ": plugin " + lib_->label() + " has a " + lib_->kind() + " table of " +
                      std::to_string(size) + " bytes; ABI 1.0 needs " + std::to_string(min_size));
  return v;
}

namespace {
using NamedParams = std::vector<std::pair<std::string, at::Tensor>>;
tsr_status collect_param(void* user, const char* name, tsr_tensor* t) {
  if (!name || !t) return TSR_ERR_INVALID_ARGUMENT;
  static_cast<NamedParams*>(user)->emplace_back(name, t->t);
  return TSR_OK;
}
}  // namespace

namespace {
constexpr size_t kEncoderRequired = offsetof(tsr_encoder_vtable, buffers);
// Whether a vtable the plugin wrote (struct_size bytes) holds a non-NULL `field`: an older
// table ends before the later fields, and a NULL pointer means "not provided".
#define TSR_VT_HAS(vt, field) \
  ((vt)->struct_size >= offsetof(std::decay_t<decltype(*(vt))>, field) + sizeof((vt)->field) && (vt)->field)
}

std::vector<std::pair<std::string, at::Tensor>> EncoderInstance::buffers() const {
  auto* vt = static_cast<const tsr_encoder_vtable*>(vtable(kEncoderRequired));
  NamedParams out;
  if (TSR_VT_HAS(vt, buffers)) check(vt->buffers(raw(), &collect_param, &out), "buffers");
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> EncoderInstance::parameters() const {
  auto* vt = static_cast<const tsr_encoder_vtable*>(vtable(kEncoderRequired));
  NamedParams out;
  check(vt->parameters(raw(), &collect_param, &out), "parameters");
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> LossInstance::parameters() const {
  auto* vt = static_cast<const tsr_loss_vtable*>(vtable(offsetof(tsr_loss_vtable, parameters)));
  NamedParams out;
  if (TSR_VT_HAS(vt, parameters))
    check(vt->parameters(raw(), &collect_param, &out), "parameters");
  return out;
}

void EncoderInstance::set_training(bool training) const {
  auto* vt = static_cast<const tsr_encoder_vtable*>(vtable(kEncoderRequired));
  if (vt->set_training) check(vt->set_training(raw(), training ? 1 : 0), "set_training");
}

void EncoderInstance::forward(TensorMap& batch) const {
  auto* vt = static_cast<const tsr_encoder_vtable*>(vtable(kEncoderRequired));
  tsr_tensor_set set(&batch, false);
  check(vt->forward(raw(), &set), "forward");
}

std::optional<double> EncoderInstance::flops(const TensorMap& batch) const {
  auto* vt = static_cast<const tsr_encoder_vtable*>(vtable(kEncoderRequired));
  if (!TSR_VT_HAS(vt, flops)) return std::nullopt;
  tsr_tensor_set set(const_cast<TensorMap*>(&batch), true);
  double f = 0;
  check(vt->flops(raw(), &set, &f), "flops");
  if (!std::isfinite(f) || f < 0) throw Error(label() + ": flops returned " + std::to_string(f) + ", not a count");
  return f;
}

bool LossInstance::has_count_units() const {
  auto* vt = static_cast<const tsr_loss_vtable*>(vtable(offsetof(tsr_loss_vtable, parameters)));
  return TSR_VT_HAS(vt, count_units);
}

std::optional<int64_t> LossInstance::count_units(const TensorMap& batch) const {
  auto* vt = static_cast<const tsr_loss_vtable*>(vtable(offsetof(tsr_loss_vtable, parameters)));
  if (!TSR_VT_HAS(vt, count_units)) return std::nullopt;
  tsr_tensor_set set(const_cast<TensorMap*>(&batch), true);
  int64_t units = -1;
  check(vt->count_units(raw(), &set, &units), "count_units");
  if (units < -1) throw Error(label() + ": count_units returned " + std::to_string(units) + " units");
  return units;
}

void LossInstance::compute(const TensorMap& batch, std::vector<Term>& terms) const {
  auto* vt = static_cast<const tsr_loss_vtable*>(vtable(offsetof(tsr_loss_vtable, parameters)));
  tsr_tensor_set set(const_cast<TensorMap*>(&batch), true);
  tsr_term_sink sink{&terms, label(), {}};
  check(vt->compute(raw(), &set, &sink), "compute");
}

namespace {
constexpr size_t kPrecisionRequired = offsetof(tsr_precision_vtable, loss_scale);
}  // namespace

tsr_precision_info PrecisionInstance::describe() const {
  auto* vt = static_cast<const tsr_precision_vtable*>(vtable(kPrecisionRequired));
  tsr_precision_info info{};
  info.struct_size = sizeof(info);
  check(vt->describe(raw(), &info), "describe");
  return info;
}

void PrecisionInstance::init_shard(const tsr_flat_shard& shard) const {
  auto* vt = static_cast<const tsr_precision_vtable*>(vtable(kPrecisionRequired));
  check(vt->init_shard(raw(), &shard), "init_shard");
}

void PrecisionInstance::init_shard(const tsr_flat_shard& shard, const tsr_optim_step& opt) const {
  auto* vt = static_cast<const tsr_precision_vtable*>(vtable(kPrecisionRequired));
  if (TSR_VT_HAS(vt, init_shard_for)) check(vt->init_shard_for(raw(), &shard, &opt), "init_shard_for");
  else check(vt->init_shard(raw(), &shard), "init_shard");
}

void PrecisionInstance::step(const tsr_flat_shard& shard, const tsr_optim_step& opt) const {
  auto* vt = static_cast<const tsr_precision_vtable*>(vtable(kPrecisionRequired));
  check(vt->step(raw(), &shard, &opt), "step");
}

bool PrecisionInstance::has_master_io() const {
  auto* vt = static_cast<const tsr_precision_vtable*>(vtable(kPrecisionRequired));
  return TSR_VT_HAS(vt, export_master) && TSR_VT_HAS(vt, import_master);
}

namespace {
void check_master_tensor(const std::string& who, const tsr_flat_shard& shard, const at::Tensor& t, const char* what) {
  if (!t.defined() || t.scalar_type() != at::kFloat || t.dim() != 1 || t.numel() != shard.numel || !t.is_contiguous())
    throw Error(who + ": " + what + " of shard '" + std::string(shard.name ? shard.name : "") +
                "' must be a contiguous 1-D fp32 tensor of " + std::to_string(shard.numel) + " elements");
}
}  // namespace

void PrecisionInstance::export_master(const tsr_flat_shard& shard, const at::Tensor& out_f32) const {
  check_master_tensor(label(), shard, out_f32, "export_master's output");
  if (!has_master_io()) {  // a 1.0 backend: its parameters are the best values there are
    at::NoGradGuard no_grad;
    at::Tensor out = out_f32;
    out.copy_(unwrap_tensor(shard.params));
    return;
  }
  auto* vt = static_cast<const tsr_precision_vtable*>(vtable(kPrecisionRequired));
  tsr_tensor* out = wrap_tensor(out_f32);
  tsr_status s = vt->export_master(raw(), &shard, out);
  release_tensor(out);
  check(s, "export_master");
}

void PrecisionInstance::import_master(const tsr_flat_shard& shard, const at::Tensor& in_f32) const {
  check_master_tensor(label(), shard, in_f32, "import_master's input");
  if (!has_master_io()) {
    if (!warned_inexact_import_) {
      warned_inexact_import_ = true;
      spdlog::warn("{}: this (ABI 1.0) backend has no import_master: its parameters are set from the checkpoint's fp32 "
                   "values by a cast, and a master copy it keeps cannot be converted exactly",
                   label());
    }
    at::NoGradGuard no_grad;
    at::Tensor params = unwrap_tensor(shard.params);
    params.copy_(in_f32);
    return;
  }
  auto* vt = static_cast<const tsr_precision_vtable*>(vtable(kPrecisionRequired));
  tsr_tensor* in = wrap_tensor(in_f32);
  tsr_status s = vt->import_master(raw(), &shard, in);
  release_tensor(in);
  check(s, "import_master");
}

double PrecisionInstance::loss_scale() const {
  auto* vt = static_cast<const tsr_precision_vtable*>(vtable(kPrecisionRequired));
  double scale = 1.0;
  if (TSR_VT_HAS(vt, loss_scale)) check(vt->loss_scale(raw(), &scale), "loss_scale");
  return scale;
}

bool PrecisionInstance::find_overflow(const tsr_flat_shard& shard) const {
  auto* vt = static_cast<const tsr_precision_vtable*>(vtable(kPrecisionRequired));
  int32_t found = 0;
  if (TSR_VT_HAS(vt, find_overflow)) check(vt->find_overflow(raw(), &shard, &found), "find_overflow");
  return found != 0;
}

bool PrecisionInstance::update_scale(bool found_inf) const {
  auto* vt = static_cast<const tsr_precision_vtable*>(vtable(kPrecisionRequired));
  int32_t skip = 0;
  if (TSR_VT_HAS(vt, update_scale)) check(vt->update_scale(raw(), found_inf ? 1 : 0, &skip), "update_scale");
  return skip != 0;
}
#undef TSR_VT_HAS

// ---- datasets -------------------------------------------------------------------------------
namespace {
constexpr size_t kDatasetRequired = offsetof(tsr_dataset_vtable, metadata);
}

bool FieldSpec::varies() const {
  for (int64_t d : shape)
    if (d < 0) return true;
  return false;
}

std::string FieldSpec::shape_str() const {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + ")";
}

DatasetInstance::DatasetInstance(std::shared_ptr<PluginLibrary> lib, Section config, std::string label)
    : PluginInstance(std::move(lib), std::move(config), std::move(label)) {
  auto* vt = static_cast<const tsr_dataset_vtable*>(vtable(kDatasetRequired));
  int64_t n = 0;
  check(vt->num_splits(raw(), &n), "num_splits");
  for (int64_t i = 0; i < n; ++i) {
    tsr_split_info info{};
    info.struct_size = sizeof(info);
    check(vt->split_info(raw(), i, &info), "split_info");
    if (!info.name || !*info.name || info.size < 0)
      throw PluginError(this->label() + ": split " + std::to_string(i) + " has no name or a negative size");
    for (const auto& s : splits_)
      if (s.name == info.name) throw PluginError(this->label() + ": two splits are named '" + s.name + "'");
    splits_.push_back({info.name, info.size});
  }
  check(vt->num_fields(raw(), &n), "num_fields");
  for (int64_t i = 0; i < n; ++i) {
    tsr_field_info info{};
    info.struct_size = sizeof(info);
    check(vt->field_info(raw(), i, &info), "field_info");
    if (!info.name || !*info.name) throw PluginError(this->label() + ": field " + std::to_string(i) + " has no name");
    if (info.ndim < 0 || info.ndim > TSR_FIELD_MAX_DIMS)
      throw PluginError(this->label() + ": field '" + info.name + "' has " + std::to_string(info.ndim) +
                        " dims (0 to 8 allowed)");
    FieldSpec f;
    f.name = info.name;
    try {
      f.dtype = to_scalar_type(info.dtype);
    } catch (const Error&) {
      throw PluginError(this->label() + ": field '" + f.name + "' has unknown dtype code " + std::to_string(info.dtype));
    }
    f.shape.assign(info.shape, info.shape + info.ndim);
    for (int64_t d : f.shape)
      if (d < -1 || d == 0)
        throw PluginError(this->label() + ": field '" + f.name + "' has size " + std::to_string(d) +
                          " (sizes are > 0, or -1 for one that varies)");
    f.pad_value = info.pad_value;
    f.doc = info.doc ? info.doc : "";
    for (const auto& g : fields_)
      if (g.name == f.name) throw PluginError(this->label() + ": two fields are named '" + f.name + "'");
    fields_.push_back(std::move(f));
  }
  if (splits_.empty()) throw PluginError(this->label() + ": the dataset declares no split");
  if (fields_.empty()) throw PluginError(this->label() + ": the dataset declares no field");
}

const SplitSpec& DatasetInstance::split(const std::string& name, const std::string& where) const {
  std::vector<std::string> names;
  for (const auto& s : splits_) {
    if (s.name == name) return s;
    names.push_back(s.name);
  }
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  std::string msg = where + ": " + label() + " has no split '" + name + "' (it has: " + list + ")";
  const std::string near = nearest(name, names);
  if (!near.empty()) msg += "; did you mean '" + near + "'?";
  throw ConfigError(msg);
}

TensorMap DatasetInstance::get(const std::string& split, int64_t index, int64_t epoch, uint64_t seed) const {
  auto* vt = static_cast<const tsr_dataset_vtable*>(vtable(kDatasetRequired));
  TensorMap out;
  {
    tsr_tensor_set set(&out, false);
    const tsr_example_request req{sizeof(tsr_example_request), split.c_str(), index, epoch, seed};
    const tsr_status s = vt->get(raw(), &req, &set);
    if (s != TSR_OK) {
      std::string msg = t_last_error.empty() ? "status " + std::to_string(s) : t_last_error;
      t_last_error.clear();
      throw DataError(label() + ": example " + std::to_string(index) + " of split '" + split + "': " + msg);
    }
  }
  auto where = [&](const FieldSpec& f) {
    return label() + ": example " + std::to_string(index) + " of split '" + split + "', field '" + f.name + "'";
  };
  for (const FieldSpec& f : fields_) {
    auto it = out.find(f.name);
    if (it == out.end()) throw PluginError(where(f) + ": get did not write it");
    const at::Tensor& t = it->second;
    if (t.scalar_type() != f.dtype)
      throw PluginError(where(f) + ": dtype " + std::string(c10::toString(t.scalar_type())) + ", declared " +
                        c10::toString(f.dtype));
    bool ok = t.dim() == static_cast<int64_t>(f.shape.size());
    for (size_t d = 0; ok && d < f.shape.size(); ++d) ok = f.shape[d] < 0 || t.size(static_cast<int64_t>(d)) == f.shape[d];
    if (!ok) throw PluginError(where(f) + ": shape " + c10::str(t.sizes()) + ", declared " + f.shape_str());
    if (!t.device().is_cpu()) throw PluginError(where(f) + ": not a CPU tensor");
  }
  return out;
}

std::optional<TensorMap> DatasetInstance::metadata(const std::string& name) const {
  auto* vt = static_cast<const tsr_dataset_vtable*>(vtable(kDatasetRequired));
  if (!vt->metadata) return std::nullopt;
  TensorMap out;
  tsr_status s;
  {
    tsr_tensor_set set(&out, false);
    s = vt->metadata(raw(), name.c_str(), &set);
  }
  if (s == TSR_ERR_NOT_FOUND) {
    t_last_error.clear();
    return std::nullopt;
  }
  check(s, ("metadata '" + name + "'").c_str());
  return out;
}

std::vector<std::string> DatasetInstance::metadata_text(const std::string& name) const {
  auto* vt = static_cast<const tsr_dataset_vtable*>(vtable(kDatasetRequired));
  std::vector<std::string> out;
  if (!vt->metadata_text) return out;
  for (int64_t i = 0;; ++i) {
    const char* item = nullptr;
    const tsr_status s = vt->metadata_text(raw(), name.c_str(), i, &item);
    if (s == TSR_ERR_NOT_FOUND) {
      t_last_error.clear();
      return out;
    }
    check(s, ("metadata_text '" + name + "'").c_str());
    out.emplace_back(item ? item : "");
  }
}

bool DatasetInstance::has_tokenizer() const {
  auto* vt = static_cast<const tsr_dataset_vtable*>(vtable(kDatasetRequired));
  return vt->struct_size >= sizeof(tsr_dataset_vtable) && vt->encode_text && vt->decode_text;
}

at::Tensor DatasetInstance::encode_text(const std::string& field, const std::string& text) const {
  if (!has_tokenizer()) throw PluginError(label() + ": the dataset has no tokenizer");
  auto* vt = static_cast<const tsr_dataset_vtable*>(vtable(kDatasetRequired));
  tsr_tensor* out = nullptr;
  check(vt->encode_text(raw(), field.c_str(), text.c_str(), &out), "encode_text");
  at::Tensor t = unwrap_tensor(out);
  release_tensor(out);
  return t;
}

std::string DatasetInstance::decode_text(const std::string& field, const at::Tensor& ids) const {
  if (!has_tokenizer()) throw PluginError(label() + ": the dataset has no tokenizer");
  auto* vt = static_cast<const tsr_dataset_vtable*>(vtable(kDatasetRequired));
  tsr_tensor* in = wrap_tensor(ids.contiguous());
  tsr_tensor* out = nullptr;
  const tsr_status s = vt->decode_text(raw(), field.c_str(), in, &out);
  release_tensor(in);
  check(s, "decode_text");
  at::Tensor bytes = unwrap_tensor(out).contiguous();
  release_tensor(out);
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(bytes.numel()));
}

}  // namespace tessera

// tessera/plugin.hpp — header-only C++ helpers for writing Tessera plugins with LibTorch.
// Not part of the ABI: RAII over handles, at::Tensor bridge, exceptions -> status, schema.
//
// A plugin written with these helpers is an ordinary C++ class:
//
//   static const tsr_config_key kKeys[] = {
//       tessera::sdk::key_int("hidden", "256", "width of the hidden layer", 1, 1 << 20),
//   };
//   class Mlp : public tessera::sdk::Encoder {
//    public:
//     explicit Mlp(const tessera::sdk::Host& host) : hidden_(host.get_int("hidden")) {...}
//     Params parameters() override { return {{"fc.weight", w_}}; }
//     void forward(tessera::sdk::TensorSet& batch) override { batch.put("y", ...); }
//   };
//   TESSERA_PLUGIN(Mlp, tessera::sdk::Encoder, "mlp", "1.0.0", "An MLP.", kKeys)
//
// Every exception thrown by the class is caught at the boundary and becomes a status plus
// message (tessera::sdk::Error carries a specific status code).
#pragma once

#include <tessera/abi.h>

#include <ATen/ATen.h>
#include <torch/version.h>

#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace tessera::sdk {

// Throw this to return a specific status code; any other exception returns TSR_ERR_RUNTIME.
class Error : public std::runtime_error {
 public:
  Error(tsr_status code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  tsr_status code() const { return code_; }

 private:
  tsr_status code_;
};

// ---- config schema, declared once as a static array of these -----------------------------
// Bounds of a number key. Leave both out for "any value"; give one side and the other open:
//   key_int("layers", "2", "transformer blocks", 1, kNoMax)        -> layers >= 1
//   key_float("shift", "0.0", "added to the input", kNoMin, 10.0)  -> shift <= 10
// (In the C ABI, min > max also means "no bounds"; the core refuses, when the plugin loads, a
// default outside its own key's bounds or allowed values, naming the plugin and the key.)
constexpr double kNoMin = -std::numeric_limits<double>::infinity();
constexpr double kNoMax = std::numeric_limits<double>::infinity();
constexpr tsr_config_key key_int(const char* name, const char* default_toml, const char* doc,
                                 double min_value = 1.0, double max_value = 0.0) {
  return {sizeof(tsr_config_key), name, TSR_CONFIG_INT, default_toml, doc, min_value, max_value, nullptr};
}
constexpr tsr_config_key key_float(const char* name, const char* default_toml, const char* doc,
                                   double min_value = 1.0, double max_value = 0.0) {
  return {sizeof(tsr_config_key), name, TSR_CONFIG_FLOAT, default_toml, doc, min_value, max_value, nullptr};
}
constexpr tsr_config_key key_bool(const char* name, const char* default_toml, const char* doc) {
  return {sizeof(tsr_config_key), name, TSR_CONFIG_BOOL, default_toml, doc, 1.0, 0.0, nullptr};
}
constexpr tsr_config_key key_string(const char* name, const char* default_toml, const char* doc) {
  return {sizeof(tsr_config_key), name, TSR_CONFIG_STRING, default_toml, doc, 1.0, 0.0, nullptr};
}
// A string key that takes one of a fixed set of values, given as "a|b|c" (ABI 1.1 allowed_values):
// a config value outside it is refused with its position and the nearest allowed value, and
// `tessera plugins inspect` lists them. The default must be one of them.
constexpr tsr_config_key key_enum(const char* name, const char* default_toml, const char* doc,
                                  const char* allowed_values) {
  return {sizeof(tsr_config_key), name, TSR_CONFIG_STRING, default_toml, doc, 1.0, 0.0, allowed_values};
}
constexpr tsr_config_key key_strings(const char* name, const char* default_toml, const char* doc) {
  return {sizeof(tsr_config_key), name, TSR_CONFIG_STRING_ARRAY, default_toml, doc, 1.0, 0.0, nullptr};
}

// ---- the host, seen from C++ -----------------------------------------------------------
class Host {
 public:
  Host(const tsr_host* host, const tsr_config* cfg) : h_(host), cfg_(cfg) {}
  const tsr_host* raw() const { return h_; }

  int64_t get_int(const char* key) const {
    int64_t v = 0;
    check(h_->config_get_int(cfg_, key, &v), key);
    return v;
  }
  double get_float(const char* key) const {
    double v = 0;
    check(h_->config_get_float(cfg_, key, &v), key);
    return v;
  }
  bool get_bool(const char* key) const {
    int32_t v = 0;
    check(h_->config_get_bool(cfg_, key, &v), key);
    return v != 0;
  }
  std::string get_string(const char* key) const {
    const char* v = nullptr;
    check(h_->config_get_string(cfg_, key, &v), key);
    return v;
  }
  std::vector<std::string> get_strings(const char* key) const {
    int64_t n = 0;
    check(h_->config_get_string_array_size(cfg_, key, &n), key);
    std::vector<std::string> out;
    for (int64_t i = 0; i < n; ++i) {
      const char* v = nullptr;
      check(h_->config_get_string_array_item(cfg_, key, i, &v), key);
      out.emplace_back(v);
    }
    return out;
  }

  void log(int32_t level, const std::string& msg) const { h_->log(h_->ctx, level, msg.c_str()); }
  void info(const std::string& msg) const { log(TSR_LOG_INFO, msg); }
  void warn(const std::string& msg) const { log(TSR_LOG_WARN, msg); }

  // Borrowed handle -> at::Tensor sharing the same TensorImpl (autograd history included).
  at::Tensor unwrap(const tsr_tensor* t) const {
    return *static_cast<const at::Tensor*>(h_->tensor_aten(t));
  }
  // at::Tensor -> new handle (the caller releases it, or passes ownership per the ABI).
  tsr_tensor* wrap(const at::Tensor& t) const { return h_->tensor_wrap_aten(&t); }
  void release(tsr_tensor* t) const { h_->tensor_release(t); }

 private:
  void check(tsr_status s, const char* key) const {
    if (s != TSR_OK) throw Error(s, std::string("config key '") + key + "' could not be read");
  }
  const tsr_host* h_;
  const tsr_config* cfg_;
};

// Owning handle: releases its reference on destruction.
class TensorRef {
 public:
  TensorRef(const Host& host, tsr_tensor* t) : host_(&host), t_(t) {}
  TensorRef(const TensorRef&) = delete;
  TensorRef& operator=(const TensorRef&) = delete;
  ~TensorRef() { host_->release(t_); }
  tsr_tensor* get() const { return t_; }

 private:
  const Host* host_;
  tsr_tensor* t_;
};

// The named tensors of one batch.
class TensorSet {
 public:
  TensorSet(const Host& host, const tsr_tensor_set* set) : host_(host), set_(set) {}
  bool has(const std::string& name) const { return host_.raw()->set_get(set_, name.c_str()); }
  at::Tensor get(const std::string& name) const {
    tsr_tensor* t = host_.raw()->set_get(set_, name.c_str());
    if (!t) throw Error(TSR_ERR_NOT_FOUND, "the batch has no tensor named '" + name + "'");
    return host_.unwrap(t);
  }
  void put(const std::string& name, const at::Tensor& value) {
    TensorRef ref(host_, host_.wrap(value));
    // set_put on a const set is a contract violation the core also rejects.
    tsr_status s = host_.raw()->set_put(const_cast<tsr_tensor_set*>(set_), name.c_str(), ref.get());
    if (s != TSR_OK) throw Error(s, "could not store tensor '" + name + "' in the batch");
  }

 private:
  const Host& host_;
  const tsr_tensor_set* set_;
};

// Where a loss reducer emits its terms.
class Terms {
 public:
  Terms(const Host& host, tsr_term_sink* sink) : host_(host), sink_(sink) {}
  // grad: undefined for a scalar term (implicit one), the explicit gradient otherwise.
  // logged: the scalar loss the term stands for in the metrics (default: mean of value).
  void emit(const std::string& name, const at::Tensor& value, double weight = 1.0,
            const at::Tensor& grad = at::Tensor(), std::optional<double> logged = std::nullopt) {
    TensorRef v(host_, host_.wrap(value));
    std::unique_ptr<TensorRef> g;
    if (grad.defined()) g = std::make_unique<TensorRef>(host_, host_.wrap(grad));
    emit_raw(name, v.get(), g ? g->get() : nullptr, weight, logged, TSR_NORMALIZE_MEAN);
  }
  // A term that is the SUM over the micro-batch's units (e.g. tokens): the core divides it by
  // the units of the whole global batch, as the loss's count_units counts them (ABI section 7).
  void emit_sum(const std::string& name, const at::Tensor& sum, double weight = 1.0) {
    TensorRef v(host_, host_.wrap(sum));
    emit_raw(name, v.get(), nullptr, weight, std::nullopt, TSR_NORMALIZE_UNITS);
  }

 private:
  void emit_raw(const std::string& name, tsr_tensor* v, tsr_tensor* g, double weight, std::optional<double> logged,
                int32_t normalize) {
    tsr_term term{sizeof(tsr_term), name.c_str(), v, g, weight, logged ? 1 : 0, logged.value_or(0.0), normalize};
    tsr_status s = host_.raw()->emit_term(sink_, &term);
    if (s != TSR_OK) throw Error(s, "term '" + name + "' was refused");
  }
  const Host& host_;
  tsr_term_sink* sink_;
};

// ---- the base classes, one per kind ---------------------------------------------------------
namespace detail {
template <class T>
struct DatasetTable;
}  // namespace detail

using Params = std::vector<std::pair<std::string, at::Tensor>>;

class Encoder {
 public:
  static constexpr const char* kKind = TSR_KIND_ENCODER;
  virtual ~Encoder() = default;
  // Trainable parameters, stable names and order. Keep using these tensor objects: the core
  // moves their storage into its flat buffers.
  virtual Params parameters() = 0;
  // Non-trained state that checkpoints must keep (e.g. BatchNorm running statistics).
  virtual Params buffers() { return {}; }
  virtual void train(bool /*training*/) {}
  virtual void forward(TensorSet& batch) = 0;
  // ABI 1.3, optional: model FLOPs of forward + backward over `batch` (after forward), for MFU.
  virtual double flops(const TensorSet& /*batch*/) { return 0; }
};

class Loss {
 public:
  static constexpr const char* kKind = TSR_KIND_LOSS;
  virtual ~Loss() = default;
  virtual void compute(const TensorSet& batch, Terms& terms) = 0;
  // Trainable parameters of the loss itself (e.g. a learned temperature); none by default.
  virtual Params parameters() { return {}; }
  // ABI 1.3, needed by a loss that emits Terms::emit_sum terms: the units (e.g. target tokens
  // that are not ignored) of this micro-batch, from the dataset's tensors, before any forward;
  // -1 when this instance emits no sum terms (the core then stops asking).
  virtual int64_t count_units(const TensorSet& /*batch*/) { return -1; }
};

class Precision {
 public:
  static constexpr const char* kKind = TSR_KIND_PRECISION;
  virtual ~Precision() = default;
  virtual tsr_precision_info describe() = 0;
  // ABI 1.0's shard initialisation: allocate the states of any supported optimizer.
  virtual void init_shard(const tsr_flat_shard& shard) = 0;
  virtual void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) = 0;
  // ABI 1.1, each optional: a class that does not override one leaves its table entry NULL, so
  // the core falls back (init_shard) or reports the backend cannot convert its master.
  // Allocate only the states `opt` needs (opt.step = 0, opt.lr = the peak rate).
  virtual void init_shard_for(const tsr_flat_shard& shard, const tsr_optim_step& /*opt*/) { init_shard(shard); }
  // Write the exact fp32 master into out ((shard.numel,) fp32 on the shard's device).
  virtual void export_master(const tsr_flat_shard& /*shard*/, tsr_tensor* /*out*/) {
    throw Error(TSR_ERR_UNSUPPORTED, "this precision backend cannot export its master");
  }
  // Set the master from in ((shard.numel,) fp32) and the parameters as an update rounds them.
  virtual void import_master(const tsr_flat_shard& /*shard*/, const tsr_tensor* /*in*/) {
    throw Error(TSR_ERR_UNSUPPORTED, "this precision backend cannot import a master");
  }
  // Dynamic loss scaling; the defaults mean "none".
  virtual double loss_scale() { return 1.0; }
  virtual bool find_overflow(const tsr_flat_shard& /*shard*/) { return false; }
  // Returns true to skip this step's update.
  virtual bool update_scale(bool /*found_inf*/) { return false; }
};

// A dataset (tessera.dataset/1): splits and fields, described once; get serves one example.
struct Field {
  std::string name;
  int32_t dtype;               // TSR_DTYPE_*
  std::vector<int64_t> shape;  // of one example; -1 = varies (the loader pads it)
  double pad_value = 0.0;
  std::string doc;
};
struct Split {
  std::string name;
  int64_t size;
};
struct Request {
  std::string split;
  int64_t index, epoch;
  uint64_t seed;
};

class Dataset {
 public:
  static constexpr const char* kKind = TSR_KIND_DATASET;
  virtual ~Dataset() = default;
  // Asked once, after the constructor (training thread).
  virtual std::vector<Split> splits() = 0;
  virtual std::vector<Field> fields() = 0;
  // ANY thread, concurrently: put every field of the example into `out` (CPU tensors). A pure
  // function of `req` (randomness from req.seed, epoch, index only).
  virtual void get(const Request& req, TensorSet& out) = 0;
  // Named metadata tensors (e.g. "zero_shot_prompts"); false when the dataset has none by that name.
  virtual bool metadata(const std::string& /*name*/, TensorSet& /*out*/) { return false; }
  // Named string lists (e.g. "class_names"), empty when unknown. Asked once per name; any thread.
  virtual std::vector<std::string> metadata_text(const std::string& /*name*/) { return {}; }
  // A text field's tokenizer (for generation); any thread.
  virtual at::Tensor encode_text(const std::string& field, const std::string& /*text*/) {
    throw Error(TSR_ERR_UNSUPPORTED, "this dataset has no tokenizer for field '" + field + "'");
  }
  virtual std::string decode_text(const std::string& field, const at::Tensor& /*ids*/) {
    throw Error(TSR_ERR_UNSUPPORTED, "this dataset has no tokenizer for field '" + field + "'");
  }

 private:
  template <class T>
  friend struct detail::DatasetTable;
  // What the C table hands out: strings that live as long as the instance.
  std::once_flag described_;
  std::vector<Split> splits_;
  std::vector<Field> fields_;
  std::mutex text_mutex_;
  std::map<std::string, std::vector<std::string>> text_;
};

// ---- the boundary: C entry points generated for a class T ----------------------------------
namespace detail {

template <class T>
struct Instance {
  Host host;
  std::unique_ptr<T> impl;
};

template <class T>
Instance<T>* self(tsr_instance* p) { return reinterpret_cast<Instance<T>*>(p); }

// Runs f, turning any exception into a status and a message for the host.
template <class F>
tsr_status guard(const tsr_host* h, F&& f) noexcept {
  try {
    f();
    return TSR_OK;
  } catch (const Error& e) {
    h->set_error(h->ctx, e.what());
    return e.code();
  } catch (const std::bad_alloc&) {
    h->set_error(h->ctx, "out of memory");
    return TSR_ERR_OUT_OF_MEMORY;
  } catch (const c10::Error& e) {
    h->set_error(h->ctx, e.what_without_backtrace());
    return TSR_ERR_RUNTIME;
  } catch (const std::exception& e) {
    h->set_error(h->ctx, e.what());
    return TSR_ERR_RUNTIME;
  } catch (...) {
    h->set_error(h->ctx, "unknown exception");
    return TSR_ERR_RUNTIME;
  }
}

template <class T>
tsr_status create(const tsr_host* host, const tsr_config* cfg, tsr_instance** out) noexcept {
  return guard(host, [&] {
    auto inst = std::make_unique<Instance<T>>(Instance<T>{Host(host, cfg), nullptr});
    inst->impl = std::make_unique<T>(inst->host);
    *out = reinterpret_cast<tsr_instance*>(inst.release());
  });
}
template <class T>
void destroy(tsr_instance* p) noexcept {
  delete self<T>(p);
}

template <class T, bool kBuffers = false>
tsr_status visit_parameters(tsr_instance* p, tsr_param_visitor visit, void* user) noexcept {
  auto* s = self<T>(p);
  return guard(s->host.raw(), [&] {
    Params named;
    if constexpr (kBuffers) named = s->impl->buffers();
    else named = s->impl->parameters();
    for (auto& [name, tensor] : named) {
      TensorRef ref(s->host, s->host.wrap(tensor));
      tsr_status st = visit(user, name.c_str(), ref.get());
      if (st != TSR_OK) throw Error(st, "parameter '" + name + "' was refused by the core");
    }
  });
}

// An optional table entry is set only when T (or a base between T and Base) overrides it:
// &T::f names Base::f, with that class type, exactly when nobody overrode f.
template <class P>
struct member_class;
template <class M, class C>
struct member_class<M C::*> {
  using type = C;
};
template <class Base, class P>
constexpr bool overridden(P) {
  return !std::is_same_v<typename member_class<P>::type, Base>;
}

template <class T>
struct EncoderTable {
  static tsr_status set_training(tsr_instance* p, int32_t training) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { s->impl->train(training != 0); });
  }
  static tsr_status forward(tsr_instance* p, tsr_tensor_set* batch) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] {
      TensorSet set(s->host, batch);
      s->impl->forward(set);
    });
  }
  static tsr_status flops(tsr_instance* p, const tsr_tensor_set* batch, double* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] {
      TensorSet set(s->host, batch);
      *out = s->impl->flops(set);
    });
  }
  static constexpr tsr_encoder_vtable vtable{sizeof(tsr_encoder_vtable), &visit_parameters<T>,
                                             &set_training, &forward, &visit_parameters<T, true>,
                                             overridden<Encoder>(&T::flops) ? &flops : nullptr};
};

template <class T>
struct LossTable {
  static tsr_status compute(tsr_instance* p, const tsr_tensor_set* batch,
                            tsr_term_sink* sink) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] {
      TensorSet set(s->host, batch);
      Terms terms(s->host, sink);
      s->impl->compute(set, terms);
    });
  }
  static tsr_status count_units(tsr_instance* p, const tsr_tensor_set* batch, int64_t* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] {
      TensorSet set(s->host, batch);
      *out = s->impl->count_units(set);
    });
  }
  static constexpr tsr_loss_vtable vtable{sizeof(tsr_loss_vtable), &compute, &visit_parameters<T>,
                                          overridden<Loss>(&T::count_units) ? &count_units : nullptr};
};

template <class T>
struct PrecisionTable {
  static tsr_status describe(tsr_instance* p, tsr_precision_info* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { *out = s->impl->describe(); });
  }
  static tsr_status init_shard(tsr_instance* p, const tsr_flat_shard* shard) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { s->impl->init_shard(*shard); });
  }
  static tsr_status step(tsr_instance* p, const tsr_flat_shard* shard,
                         const tsr_optim_step* opt) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { s->impl->step(*shard, *opt); });
  }
  static tsr_status loss_scale(tsr_instance* p, double* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { *out = s->impl->loss_scale(); });
  }
  static tsr_status find_overflow(tsr_instance* p, const tsr_flat_shard* shard, int32_t* found_inf) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { *found_inf = s->impl->find_overflow(*shard) ? 1 : 0; });
  }
  static tsr_status update_scale(tsr_instance* p, int32_t found_inf, int32_t* skip) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { *skip = s->impl->update_scale(found_inf != 0) ? 1 : 0; });
  }
  static tsr_status init_shard_for(tsr_instance* p, const tsr_flat_shard* shard, const tsr_optim_step* opt) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { s->impl->init_shard_for(*shard, *opt); });
  }
  static tsr_status export_master(tsr_instance* p, const tsr_flat_shard* shard, tsr_tensor* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { s->impl->export_master(*shard, out); });
  }
  static tsr_status import_master(tsr_instance* p, const tsr_flat_shard* shard, const tsr_tensor* in) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { s->impl->import_master(*shard, in); });
  }
  static constexpr tsr_precision_vtable vtable{
      sizeof(tsr_precision_vtable), &describe, &init_shard, &step, &loss_scale, &find_overflow, &update_scale,
      overridden<Precision>(&T::init_shard_for) ? &init_shard_for : nullptr,
      overridden<Precision>(&T::export_master) ? &export_master : nullptr,
      overridden<Precision>(&T::import_master) ? &import_master : nullptr};
};

template <class T>
struct DatasetTable {
  static void describe(Instance<T>* s) {
    Dataset& d = *s->impl;
    std::call_once(d.described_, [&] {
      d.splits_ = d.splits();
      d.fields_ = d.fields();
      for (const Field& f : d.fields_)
        if (f.shape.size() > TSR_FIELD_MAX_DIMS)
          throw Error(TSR_ERR_INVALID_ARGUMENT, "field '" + f.name + "' has more than 8 dims");
    });
  }
  static tsr_status num_splits(tsr_instance* p, int64_t* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { describe(s); *out = static_cast<int64_t>(s->impl->splits_.size()); });
  }
  static tsr_status split_info(tsr_instance* p, int64_t i, tsr_split_info* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] {
      describe(s);
      const Split& sp = s->impl->splits_.at(static_cast<size_t>(i));
      *out = tsr_split_info{sizeof(tsr_split_info), sp.name.c_str(), sp.size};
    });
  }
  static tsr_status num_fields(tsr_instance* p, int64_t* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { describe(s); *out = static_cast<int64_t>(s->impl->fields_.size()); });
  }
  static tsr_status field_info(tsr_instance* p, int64_t i, tsr_field_info* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] {
      describe(s);
      const Field& f = s->impl->fields_.at(static_cast<size_t>(i));
      tsr_field_info info{};
      info.struct_size = sizeof(info);
      info.name = f.name.c_str();
      info.dtype = f.dtype;
      info.ndim = static_cast<int32_t>(f.shape.size());
      for (size_t d = 0; d < f.shape.size(); ++d) info.shape[d] = f.shape[d];
      info.pad_value = f.pad_value;
      info.doc = f.doc.c_str();
      *out = info;
    });
  }
  static tsr_status get(tsr_instance* p, const tsr_example_request* req, tsr_tensor_set* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] {
      TensorSet set(s->host, out);
      s->impl->get(Request{req->split ? req->split : "", req->index, req->epoch, req->seed}, set);
    });
  }
  static tsr_status metadata(tsr_instance* p, const char* name, tsr_tensor_set* out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] {
      TensorSet set(s->host, out);
      if (!s->impl->metadata(name, set)) throw Error(TSR_ERR_NOT_FOUND, std::string("no metadata named '") + name + "'");
    });
  }
  static tsr_status metadata_text(tsr_instance* p, const char* name, int64_t index, const char** out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] {
      Dataset& d = *s->impl;
      std::lock_guard<std::mutex> lock(d.text_mutex_);
      auto it = d.text_.find(name);
      if (it == d.text_.end()) it = d.text_.emplace(name, d.metadata_text(name)).first;
      if (index < 0 || index >= static_cast<int64_t>(it->second.size()))
        throw Error(TSR_ERR_NOT_FOUND, std::string("metadata '") + name + "' has no item " + std::to_string(index));
      *out = it->second[static_cast<size_t>(index)].c_str();
    });
  }
  static tsr_status encode_text(tsr_instance* p, const char* field, const char* text, tsr_tensor** out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] { *out = s->host.wrap(s->impl->encode_text(field, text).to(at::kLong).contiguous()); });
  }
  static tsr_status decode_text(tsr_instance* p, const char* field, const tsr_tensor* ids, tsr_tensor** out) noexcept {
    auto* s = self<T>(p);
    return guard(s->host.raw(), [&] {
      const std::string text = s->impl->decode_text(field, s->host.unwrap(ids));
      at::Tensor bytes = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
      if (!text.empty()) std::memcpy(bytes.data_ptr<uint8_t>(), text.data(), text.size());
      *out = s->host.wrap(bytes);
    });
  }
  static constexpr tsr_dataset_vtable vtable{sizeof(tsr_dataset_vtable), &num_splits, &split_info, &num_fields,
                                             &field_info, &get, &metadata, &metadata_text, &encode_text,
                                             &decode_text};
};

template <class Base, class T>
constexpr const void* vtable_for() {
  if constexpr (std::is_same_v<Base, Encoder>) return &EncoderTable<T>::vtable;
  else if constexpr (std::is_same_v<Base, Loss>) return &LossTable<T>::vtable;
  else if constexpr (std::is_same_v<Base, Dataset>) return &DatasetTable<T>::vtable;
  else return &PrecisionTable<T>::vtable;
}

}  // namespace detail
}  // namespace tessera::sdk

// Defines the plugin's one exported entry symbol for class CLASS deriving from BASE
// (tessera::sdk::Encoder, ::Loss, ::Precision or ::Dataset). KEYS is a static tsr_config_key
// array; a plugin without config keys uses TESSERA_PLUGIN_NO_KEYS (no array needed).
#define TESSERA_PLUGIN_ENTRY_(CLASS, BASE, NAME, VERSION, DESCRIPTION, KEY_PTR, KEY_COUNT)   \
  extern "C" TSR_EXPORT const tsr_plugin_descriptor* tessera_plugin_entry(void) {            \
    static_assert(std::is_base_of_v<BASE, CLASS>, #CLASS " must derive from " #BASE);         \
    static const tsr_plugin_descriptor descriptor{                                            \
        sizeof(tsr_plugin_descriptor), TSR_ABI_MAJOR, TSR_ABI_MINOR, NAME, VERSION,           \
        BASE::kKind, DESCRIPTION, TORCH_VERSION, KEY_PTR, KEY_COUNT,                          \
        &tessera::sdk::detail::create<CLASS>, &tessera::sdk::detail::destroy<CLASS>,          \
        tessera::sdk::detail::vtable_for<BASE, CLASS>()};                                     \
    return &descriptor;                                                                       \
  }
#define TESSERA_PLUGIN(CLASS, BASE, NAME, VERSION, DESCRIPTION, KEYS) \
  TESSERA_PLUGIN_ENTRY_(CLASS, BASE, NAME, VERSION, DESCRIPTION, KEYS, static_cast<uint32_t>(sizeof(KEYS) / sizeof((KEYS)[0])))
#define TESSERA_PLUGIN_NO_KEYS(CLASS, BASE, NAME, VERSION, DESCRIPTION) \
  TESSERA_PLUGIN_ENTRY_(CLASS, BASE, NAME, VERSION, DESCRIPTION, nullptr, 0u)

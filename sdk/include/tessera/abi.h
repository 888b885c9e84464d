/* tessera/abi.h — the Tessera plugin ABI, version 1.0. Pure C11; a plugin author needs
 * nothing else. Defines: status codes, dtypes, opaque handles, the host table (core ->
 * plugin), the plugin descriptor (plugin -> core) and one function table per plugin kind.
 *
 * ---------------------------------------------------------------------------------------
 * How a plugin is found and loaded
 *   A plugin is a shared library that exports exactly one symbol, TSR_ENTRY_SYMBOL
 *   ("tessera_plugin_entry"), of type tsr_entry_fn. It should be built with hidden
 *   visibility (TSR_EXPORT marks the entry). The core opens it with RTLD_NOW|RTLD_LOCAL,
 *   calls the entry once, and checks the descriptor it returns:
 *     - abi_major must equal the core's TSR_ABI_MAJOR, or the library is refused with
 *       a message naming both versions;
 *     - abi_minor may be newer than the core's: the core reads only the fields it knows
 *       (every struct starts with struct_size) and ignores the rest;
 *     - kind must be the one the config slot asks for ("tessera.encoder/1", ...).
 *   The library stays loaded while any instance, tensor or DLPack deleter from it lives.
 *
 * Rules every struct and call keeps
 *   - Every struct begins with uint32_t struct_size = sizeof(the struct as the writer
 *     knew it). Fields are only ever appended. A reader must check struct_size before
 *     touching a field past the 1.0 layout. A NULL function pointer means "not provided".
 *   - Only C types cross: fixed-width integers, double, UTF-8 const char*, opaque
 *     handles, enums passed as int32_t.
 *   - Errors are returned as tsr_status; a plugin sets the message with host->set_error
 *     before returning a non-OK status. On error, out-parameters are left untouched.
 *     Nothing may unwind across this boundary (no C++ exceptions).
 *   - Ownership is written on every parameter: "borrowed" (valid until the call returns,
 *     the callee must not release it) or "new reference" (the receiver must release it
 *     with host->tensor_release, or the named deleter).
 *
 * Threading
 *   The core calls the entry function and every descriptor/vtable function from its
 *   training thread. An instance is never called concurrently with itself; different
 *   instances may be called from different threads. Host functions are thread-safe
 *   unless noted. host->set_error stores the message for the calling thread.
 * --------------------------------------------------------------------------------------- */
#ifndef TESSERA_ABI_H
#define TESSERA_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TSR_ABI_MAJOR 1
#define TSR_ABI_MINOR 1
#define TSR_ENTRY_SYMBOL "tessera_plugin_entry"

#if defined(_WIN32)
#define TSR_EXPORT __declspec(dllexport)
#else
#define TSR_EXPORT __attribute__((visibility("default")))
#endif

/* Plugin kinds: versioned string ids. Third parties may define more. */
#define TSR_KIND_ENCODER "tessera.encoder/1"
#define TSR_KIND_LOSS "tessera.loss/1"
#define TSR_KIND_PRECISION "tessera.precision/1"

/* ---- status ---------------------------------------------------------------------- */
typedef int32_t tsr_status;
enum {
  TSR_OK = 0,
  TSR_ERR_INVALID_ARGUMENT = 1, /* a caller passed something malformed */
  TSR_ERR_NOT_FOUND = 2,        /* a named tensor, key or symbol is missing */
  TSR_ERR_TYPE = 3,             /* wrong dtype, shape or config type */
  TSR_ERR_UNSUPPORTED = 4,      /* valid request this plugin/host cannot do */
  TSR_ERR_OUT_OF_MEMORY = 5,
  TSR_ERR_RUNTIME = 6           /* anything else; the message says what */
};

/* ---- dtypes (values are stable ABI) ---------------------------------------------- */
enum {
  TSR_DTYPE_F32 = 0,
  TSR_DTYPE_F64 = 1,
  TSR_DTYPE_F16 = 2,
  TSR_DTYPE_BF16 = 3,
  TSR_DTYPE_I64 = 4,
  TSR_DTYPE_I32 = 5,
  TSR_DTYPE_U8 = 6,
  TSR_DTYPE_BOOL = 7,
  TSR_DTYPE_I16 = 8,
  TSR_DTYPE_NONE = -1 /* "not applicable", e.g. no autocast */
};

/* ---- log levels ------------------------------------------------------------------ */
enum { TSR_LOG_DEBUG = 0, TSR_LOG_INFO = 1, TSR_LOG_WARN = 2, TSR_LOG_ERROR = 3 };

/* ---- opaque handles (all owned by the core) -------------------------------------- */
typedef struct tsr_host_ctx tsr_host_ctx;     /* the core's state behind the host table */
typedef struct tsr_tensor tsr_tensor;         /* refcounted tensor; see tensor_retain */
typedef struct tsr_tensor_set tsr_tensor_set; /* named tensors of one batch */
typedef struct tsr_config tsr_config;         /* this instance's validated config table */
typedef struct tsr_term_sink tsr_term_sink;   /* where a loss reducer emits its terms */
typedef struct tsr_instance tsr_instance;     /* plugin-defined instance state */

/* DLPack's managed tensor (dlpack.h, v0.6+ "unversioned" struct). Plugins that read
 * tensors without LibTorch include <dlpack/dlpack.h> to see its fields. */
struct DLManagedTensor;

/* ---- config schema: how a plugin describes its keys -------------------------------- */
enum {
  TSR_CONFIG_INT = 0,
  TSR_CONFIG_FLOAT = 1,
  TSR_CONFIG_BOOL = 2,
  TSR_CONFIG_STRING = 3,
  TSR_CONFIG_STRING_ARRAY = 4
};

typedef struct tsr_config_key {
  uint32_t struct_size;
  const char* name;         /* key in the plugin's TOML table */
  int32_t type;             /* TSR_CONFIG_* */
  const char* default_toml; /* default as a TOML value literal ("256", "0.1", "\"x\"");
                               NULL means the key is required */
  const char* doc;          /* one line for `tessera plugins inspect` */
  double min_value;         /* inclusive bounds for INT/FLOAT; use min > max for none */
  double max_value;
  /* since 1.1 */
  const char* allowed_values; /* STRING keys: NULL = any string, or the allowed values
                                 separated by '|' ("sum|mean"); validated like core keys */
} tsr_config_key;

/* ---- loss terms ------------------------------------------------------------------ */
typedef struct tsr_term {
  uint32_t struct_size;
  const char* name;   /* unique within one step; borrowed */
  tsr_tensor* tensor; /* borrowed; the sink retains what it keeps */
  tsr_tensor* grad;   /* borrowed, may be NULL: implicit 1 for a scalar tensor;
                         required (same shape, dtype, device) for a non-scalar one */
  double weight;      /* multiplies the term's gradient seed (and its logged value) */
  int32_t has_value;  /* nonzero: `value` is the scalar loss this term stands for (what the
                         metrics log, e.g. for a non-scalar term with an explicit gradient);
                         zero: the core logs the mean of `tensor` */
  double value;
} tsr_term;

/* ---- parameters ------------------------------------------------------------------ */
/* Called once per parameter by an encoder's `parameters`. name: borrowed; tensor:
 * borrowed. Returns TSR_OK to continue. Called on the caller's thread. */
typedef tsr_status (*tsr_param_visitor)(void* user, const char* name, tsr_tensor* tensor);

/* ---- the host table: what the core offers every plugin ----------------------------- */
typedef struct tsr_host {
  uint32_t struct_size;
  uint32_t abi_major; /* the core's ABI version */
  uint32_t abi_minor;
  tsr_host_ctx* ctx;  /* pass back as the first argument where asked */

  /* Logging and errors. msg: borrowed UTF-8. */
  void (*log)(tsr_host_ctx* ctx, int32_t level, const char* msg);
  /* Sets the calling thread's error message for the non-OK status about to be returned. */
  void (*set_error)(tsr_host_ctx* ctx, const char* msg);

  /* Config access: this instance's own table, already validated against the schema the
   * descriptor declares, defaults filled in. A key not in the schema is TSR_ERR_NOT_FOUND;
   * a type mismatch is TSR_ERR_TYPE. *out of get_string is borrowed and lives as long as
   * the instance. get_string_array_size + get_string_array_item read STRING_ARRAY keys. */
  tsr_status (*config_get_int)(const tsr_config* cfg, const char* key, int64_t* out);
  tsr_status (*config_get_float)(const tsr_config* cfg, const char* key, double* out);
  tsr_status (*config_get_bool)(const tsr_config* cfg, const char* key, int32_t* out);
  tsr_status (*config_get_string)(const tsr_config* cfg, const char* key, const char** out);
  tsr_status (*config_get_string_array_size)(const tsr_config* cfg, const char* key,
                                             int64_t* out);
  tsr_status (*config_get_string_array_item)(const tsr_config* cfg, const char* key,
                                             int64_t index, const char** out);

  /* Tensor handles. retain: +1 reference; release: -1, frees at zero (NULL is a no-op). */
  void (*tensor_retain)(tsr_tensor* t);
  void (*tensor_release)(tsr_tensor* t);
  /* Shape and type queries on a borrowed handle. */
  int32_t (*tensor_dtype)(const tsr_tensor* t);
  int64_t (*tensor_ndim)(const tsr_tensor* t);
  int64_t (*tensor_size)(const tsr_tensor* t, int64_t dim);
  int64_t (*tensor_numel)(const tsr_tensor* t);
  /* Raw storage pointer of a contiguous CPU or device tensor (NULL if not contiguous).
   * Valid while the handle lives. */
  void* (*tensor_data)(tsr_tensor* t);

  /* DLPack bridge, for plugins that do not use LibTorch.
   * to_dlpack: t borrowed; *out is a new DLManagedTensor sharing t's memory; the caller
   *            calls (*out)->deleter(*out) when done.
   * from_dlpack: src is consumed (its deleter is called by the core when the tensor
   *            dies, also on error; the plugin's library stays loaded until then);
   *            *out is a new reference. */
  tsr_status (*tensor_to_dlpack)(tsr_tensor* t, struct DLManagedTensor** out);
  tsr_status (*tensor_from_dlpack)(tsr_host_ctx* ctx, struct DLManagedTensor* src,
                                   tsr_tensor** out);

  /* Named tensors of a batch. set_get: borrowed result, NULL if absent. set_put: t is
   * borrowed (the set retains it); replaces an existing entry of that name. */
  tsr_tensor* (*set_get)(const tsr_tensor_set* set, const char* name);
  tsr_status (*set_put)(tsr_tensor_set* set, const char* name, tsr_tensor* t);

  /* Loss terms. term and its fields are borrowed; the sink retains the tensors. */
  tsr_status (*emit_term)(tsr_term_sink* sink, const tsr_term* term);

  /* Optimizer-state and master-weight buffers for precision backends: a new zero-filled
   * 1-D tensor of numel elements, on the parameters' device, that the core tracks by
   * name (unique per instance) and category (TSR_STATE_*) for memory accounting and
   * checkpoints. *out is a new reference. */
  tsr_status (*alloc_state)(tsr_host_ctx* ctx, const char* name, int32_t category,
                            int32_t dtype, int64_t numel, tsr_tensor** out);

  /* LibTorch bridge for plugins built against the same LibTorch as the core (the loader
   * checks descriptor->torch_version against torch_version below).
   * tensor_aten: borrowed pointer to the at::Tensor behind t.
   * tensor_wrap_aten: at_tensor is a const at::Tensor* (borrowed); returns a new reference. */
  const char* torch_version;
  const void* (*tensor_aten)(const tsr_tensor* t);
  tsr_tensor* (*tensor_wrap_aten)(const void* at_tensor);
} tsr_host;

/* ---- kind: tessera.encoder/1 ------------------------------------------------------ */
typedef struct tsr_encoder_vtable {
  uint32_t struct_size;
  /* Visits every trainable parameter (stable names, stable order). The core then keeps
   * each parameter's storage inside a flat buffer it owns: the plugin must keep using
   * the same tensor objects and must not replace them. */
  tsr_status (*parameters)(tsr_instance* self, tsr_param_visitor visit, void* user);
  /* training != 0 selects training behaviour (dropout etc.). */
  tsr_status (*set_training)(tsr_instance* self, int32_t training);
  /* Reads named inputs from batch and writes named outputs into it. */
  tsr_status (*forward)(tsr_instance* self, tsr_tensor_set* batch);
  /* Optional (NULL = none): state that is not trained but must survive a checkpoint (e.g.
   * BatchNorm running statistics), visited like parameters; the core restores them in place. */
  tsr_status (*buffers)(tsr_instance* self, tsr_param_visitor visit, void* user);
} tsr_encoder_vtable;

/* ---- kind: tessera.loss/1 --------------------------------------------------------- */
typedef struct tsr_loss_vtable {
  uint32_t struct_size;
  /* Reads named tensors (batch is borrowed, read-only) and emits one or more terms into
   * sink. Terms must stay in the autograd graph (they are backwarded by the core). */
  tsr_status (*compute)(tsr_instance* self, const tsr_tensor_set* batch, tsr_term_sink* sink);
  /* Optional (NULL = none): trainable parameters of the loss itself, e.g. a learned
   * temperature; same contract as the encoder's `parameters`. */
  tsr_status (*parameters)(tsr_instance* self, tsr_param_visitor visit, void* user);
} tsr_loss_vtable;

/* ---- kind: tessera.precision/1 ---------------------------------------------------- */
enum {
  TSR_MASTER_NONE = 0,       /* parameters are the master copy */
  TSR_MASTER_FP32 = 1,       /* a separate fp32 copy */
  TSR_MASTER_REMAINDER16 = 2 /* 16-bit remainder that with bf16 params is exact fp32 */
};
enum { TSR_OPTIM_ADAMW = 0, TSR_OPTIM_SGD = 1, TSR_OPTIM_LION = 2 /* since 1.1 */ };
enum { TSR_STATE_OPTIMIZER = 0, TSR_STATE_MASTER = 1 }; /* alloc_state categories */

typedef struct tsr_precision_info {
  uint32_t struct_size;
  int32_t param_dtype;    /* dtype parameters are kept in for compute */
  int32_t grad_dtype;     /* dtype of the gradient buffer */
  int32_t master_policy;  /* TSR_MASTER_* */
  int32_t state_dtype;    /* optimizer moments */
  int32_t autocast_dtype; /* TSR_DTYPE_NONE for no autocast */
} tsr_precision_info;

/* A backend keeps ALL of its state (moments, masters, remainders, its loss scale and
 * counters) in buffers from host->alloc_state: the core accounts for their memory and saves
 * and restores them with checkpoints by name, so a backend needs no serialisation code. */

/* One contiguous shard of one flat buffer (a range of the model's parameters). */
typedef struct tsr_flat_shard {
  uint32_t struct_size;
  const char* name;     /* the buffer's name, e.g. "f32"; stable across runs */
  int32_t param_dtype;
  int32_t grad_dtype;
  tsr_tensor* params;   /* borrowed: 1-D, numel elements, contiguous */
  tsr_tensor* grads;    /* borrowed: 1-D, numel elements, contiguous */
  int64_t offset;       /* first element of this shard in the whole flat buffer */
  int64_t numel;
} tsr_flat_shard;

typedef struct tsr_optim_step {
  uint32_t struct_size;
  int32_t algorithm;    /* TSR_OPTIM_* */
  int64_t step;         /* 1-based count of optimizer steps, for bias correction */
  double lr;
  double beta1, beta2, eps;   /* AdamW */
  double momentum;            /* SGD */
  int32_t nesterov;           /* SGD */
  double weight_decay;        /* decoupled (AdamW) / L2 (SGD) */
  double grad_scale;          /* multiply gradients by this first (unscale x clip) */
} tsr_optim_step;

typedef struct tsr_precision_vtable {
  uint32_t struct_size;
  tsr_status (*describe)(tsr_instance* self, tsr_precision_info* out);
  /* Called once per shard before the first step: allocate states via host->alloc_state.
   * A backend with a master copy initialises it from shard->params here. */
  tsr_status (*init_shard)(tsr_instance* self, const tsr_flat_shard* shard);
  /* Updates shard->params in place from shard->grads (multiplied by opt->grad_scale, which
   * already includes 1 / loss_scale). */
  tsr_status (*step)(tsr_instance* self, const tsr_flat_shard* shard, const tsr_optim_step* opt);
  /* Optional (NULL = no loss scaling): the factor the core multiplies every loss seed by for
   * the next backward. */
  tsr_status (*loss_scale)(tsr_instance* self, double* out);
  /* Optional: *found_inf = 1 when shard->grads holds a NaN or Inf (before unscaling). */
  tsr_status (*find_overflow)(tsr_instance* self, const tsr_flat_shard* shard, int32_t* found_inf);
  /* Optional: called once per optimizer step with found_inf over all shards and ranks; the
   * backend adapts its loss scale and sets *skip_step = 1 to drop this step's update. An
   * error here (e.g. the scale fell to its minimum) stops training with its message. */
  tsr_status (*update_scale)(tsr_instance* self, int32_t found_inf, int32_t* skip_step);
  /* since 1.1 */
  /* Optional; when present the core calls it INSTEAD of init_shard. opt names the optimizer
   * (algorithm and hyper-parameters; step = 0, lr = the peak rate), so the backend allocates
   * only the states that optimizer needs. opt: borrowed. */
  tsr_status (*init_shard_for)(tsr_instance* self, const tsr_flat_shard* shard, const tsr_optim_step* opt);
  /* Optional: writes the shard's exact fp32 master values (the parameters widened when the
   * backend keeps no master) into out (borrowed: 1-D fp32, shard->numel elements, the
   * shard's device). Checkpoints store these, so any backend can load them. */
  tsr_status (*export_master)(tsr_instance* self, const tsr_flat_shard* shard, tsr_tensor* out);
  /* Optional: sets the shard's master from in (borrowed: 1-D fp32, shard->numel elements)
   * and the parameters from the master, rounded as the backend's update rounds them. */
  tsr_status (*import_master)(tsr_instance* self, const tsr_flat_shard* shard, const tsr_tensor* in);
} tsr_precision_vtable;

/* ---- the descriptor: what a plugin says about itself ------------------------------- */
typedef struct tsr_plugin_descriptor {
  uint32_t struct_size;
  uint32_t abi_major;          /* TSR_ABI_MAJOR the plugin was built with */
  uint32_t abi_minor;
  const char* name;            /* unique in a registry, e.g. "mlp" */
  const char* version;         /* the plugin's own version, e.g. "1.0.0" */
  const char* kind;            /* TSR_KIND_* or a third party's versioned id */
  const char* description;     /* one paragraph */
  const char* torch_version;   /* LibTorch version it was built against, NULL if none */
  const tsr_config_key* config_keys; /* num_config_keys entries, static storage */
  uint32_t num_config_keys;
  /* Creates an instance. host: borrowed, outlives the instance. cfg: borrowed, outlives
   * the instance. *out: a new instance, released with destroy. */
  tsr_status (*create)(const tsr_host* host, const tsr_config* cfg, tsr_instance** out);
  void (*destroy)(tsr_instance* self);
  const void* vtable;          /* tsr_<kind>_vtable for the kind above */
} tsr_plugin_descriptor;

/* The one exported symbol: returns a descriptor with static storage duration. */
typedef const tsr_plugin_descriptor* (*tsr_entry_fn)(void);

/* ---- layout checks for ABI 1.0 (x86-64 / aarch64 LP64) ----------------------------- */
#if defined(__cplusplus)
#define TSR_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define TSR_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif
#if UINTPTR_MAX == 0xFFFFFFFFFFFFFFFFu
TSR_STATIC_ASSERT(sizeof(tsr_config_key) == 64, "tsr_config_key layout changed");
TSR_STATIC_ASSERT(offsetof(tsr_config_key, allowed_values) == 56, "tsr_config_key layout (1.1)");
TSR_STATIC_ASSERT(offsetof(tsr_config_key, default_toml) == 24, "tsr_config_key layout");
TSR_STATIC_ASSERT(sizeof(tsr_term) == 56, "tsr_term layout changed");
TSR_STATIC_ASSERT(offsetof(tsr_term, weight) == 32, "tsr_term layout");
TSR_STATIC_ASSERT(offsetof(tsr_host, log) == 24, "tsr_host layout");
TSR_STATIC_ASSERT(offsetof(tsr_host, alloc_state) == 184, "tsr_host layout");
TSR_STATIC_ASSERT(sizeof(tsr_host) == 216, "tsr_host layout changed");
TSR_STATIC_ASSERT(sizeof(tsr_encoder_vtable) == 40, "tsr_encoder_vtable layout changed");
TSR_STATIC_ASSERT(sizeof(tsr_loss_vtable) == 24, "tsr_loss_vtable layout changed");
TSR_STATIC_ASSERT(offsetof(tsr_precision_vtable, init_shard_for) == 56, "tsr_precision_vtable layout (1.1)");
TSR_STATIC_ASSERT(sizeof(tsr_precision_vtable) == 80, "tsr_precision_vtable layout changed");
TSR_STATIC_ASSERT(sizeof(tsr_precision_info) == 24, "tsr_precision_info layout changed");
TSR_STATIC_ASSERT(sizeof(tsr_flat_shard) == 56, "tsr_flat_shard layout changed");
TSR_STATIC_ASSERT(offsetof(tsr_optim_step, grad_scale) == 72, "tsr_optim_step layout");
TSR_STATIC_ASSERT(sizeof(tsr_optim_step) == 80, "tsr_optim_step layout changed");
TSR_STATIC_ASSERT(offsetof(tsr_plugin_descriptor, create) == 72, "descriptor layout");
TSR_STATIC_ASSERT(sizeof(tsr_plugin_descriptor) == 96, "descriptor layout changed");
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif
#endif /* TESSERA_ABI_H */

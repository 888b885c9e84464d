/* tessera/abi.h — the Tessera plugin ABI, version 1.4. Pure C11, and a plugin author's whole
 * manual: status codes, dtypes, opaque handles, the host table (core -> plugin), the plugin
 * descriptor (plugin -> core) and one function table per plugin kind, each call with its contract.
 *
 * =======================================================================================
 * 1. How a plugin is found and loaded
 *   A plugin is a shared library that exports exactly one symbol, TSR_ENTRY_SYMBOL
 *   ("tessera_plugin_entry"), of type tsr_entry_fn. Build it with hidden visibility (TSR_EXPORT
 *   marks the entry). The core opens it with RTLD_NOW|RTLD_LOCAL, calls the entry once, and
 *   checks the descriptor it returns:
 *     - abi_major must equal the core's TSR_ABI_MAJOR, or the library is refused with a
 *       message naming both versions;
 *     - abi_minor may be older or newer than the core's: every struct starts with struct_size,
 *       the core reads only the fields both sides know and ignores the rest;
 *     - torch_version, when not NULL, must match the core's LibTorch major.minor;
 *     - every config key is checked: a known type, a default that parses as that type and
 *       lies inside the key's [min, max] range / allowed values (since 1.1). A failure refuses
 *       the library with a message naming it and the key;
 *     - kind must be the one the config slot asks for ("tessera.encoder/1", ...).
 *   The library stays loaded while any instance, tensor or DLPack deleter from it lives.
 *
 * 2. Versions: what "since 1.N" means
 *   Fields are only ever appended. Each field added after 1.0 is marked since 1.N. A plugin
 *   built against 1.0 keeps loading on a 1.1 core; a reader checks struct_size before touching
 *   a field past the 1.0 layout (a 1.0 tsr_config_key is 56 bytes: the core reads a plugin's key
 *   array with the stride keys[0].struct_size). A NULL function pointer means "not provided".
 *
 * 3. Rules every struct and call keeps
 *   - Every struct begins with uint32_t struct_size = sizeof(the struct as the writer knew it).
 *   - Only C types cross: fixed-width integers, double, UTF-8 const char*, opaque handles,
 *     enums passed as int32_t.
 *   - Errors are returned as tsr_status; a plugin sets the message with host->set_error on the
 *     thread that returns the non-OK status, just before returning it. On error, out-parameters
 *     are left untouched. Nothing may unwind across this boundary (no C++ exceptions).
 *   - Ownership is written on every parameter: "borrowed" (valid until the call returns unless
 *     said otherwise; the callee must not release it) or "new reference" (the receiver releases
 *     it with host->tensor_release, or the named deleter).
 *   - Strings a plugin hands the core in its descriptor and key array have static storage;
 *     strings it passes to a host call are borrowed (the core copies what it keeps).
 *
 * 4. Threads
 *   The core calls the entry, create/destroy and every vtable function from its training
 *   thread (the thread that built the experiment and runs the step loop). An instance is never
 *   called concurrently with itself unless its kind says so (only a dataset's get and
 *   metadata_text/encode_text/decode_text, section 8); different instances may
 *   be called from different threads. Autograd functions a plugin records in forward/compute
 *   run later, inside the core's backward, on LibTorch's autograd threads (the training thread
 *   for CPU tensors, a per-device thread for CUDA ones): from there call only the tensor_*
 *   queries and tensor_retain/tensor_release. Host functions are thread-safe unless their
 *   comment restricts them; a plugin may call them from threads it starts itself while a call
 *   of the core into it is in progress (e.g. at::parallel_for workers inside forward).
 *
 * 5. Devices and CUDA streams
 *   Parameters, gradients, shards and state buffers live on the experiment's device; batch
 *   tensors where the data loader put them. A plugin that launches its own kernels runs them
 *   on LibTorch's current stream of the tensors' device at the time of the call
 *   (c10::cuda::getCurrentCUDAStream(device)); a precision backend's kernels run on the current
 *   stream of the shard's device. The core queues its own work on that same stream, so a plugin
 *   need not synchronise the device; one that uses another stream must make the current stream
 *   wait for its work before it returns.
 *
 * 6. One training step, as the plugins see it
 *     precision.loss_scale                    once per optimizer step, before its backward(s)
 *     for each micro-batch: encoders' forward (config order), then losses' compute, all under
 *       autocast to the backend's autocast_dtype (when not TSR_DTYPE_NONE); then the core's ONE
 *       backward of every term (section 7)
 *     precision.find_overflow                 once per shard, after gradients are reduced
 *     precision.update_scale                  once, with the vote of every shard and rank;
 *                                             *skip_step = 1 drops the update
 *     precision.step                          once per shard (this rank's shards), unless skipped
 *   precision.init_shard_for (since 1.1; init_shard for a 1.0 backend) is called once per
 *   shard before the first step (and before a checkpoint is restored into its states).
 *   precision.export_master runs when a checkpoint is saved, import_master when one is
 *   loaded (after init_shard_for), once per shard, between steps.
 *
 * 7. Loss terms: weights, normalisation, dtypes
 *   A loss reducer emits terms; the core backwards all terms of a micro-batch at once with
 *     seed = (grad, or 1 for a scalar term) * term.weight * [[loss]].weight * loss_scale / N
 *   where [[loss]].weight is the `weight` key of the reducer's [[loss]] table (default 1.0),
 *   loss_scale is precision.loss_scale (1 without one) and N the number of micro-batches of the
 *   global batch (accumulation steps x ranks, or the deterministic groups): so a term should be
 *   the mean over the rows of its micro-batch, and the update sees the mean over the global
 *   batch. The logged value of a term is (has_value ? value : mean of tensor) x both weights.
 *   Since 1.3 a term with normalize = TSR_NORMALIZE_UNITS is instead the SUM over units (tokens)
 *   of its micro-batch, and N is replaced by U, the units of the whole global batch (every
 *   micro-batch of the step on every rank, as the loss's count_units counts them; the core sums
 *   the counts before the step's first forward and all-reduces them). So a sequence loss is the
 *   mean over the global batch's tokens, whatever the padding, the accumulation or the world
 *   size: a micro-batch with more real tokens weighs more. Its logged value is the per-unit mean
 *   over the global batch, x both weights. A loss with [[loss]] gather cannot emit such terms.
 *   A non-finite term stops (or, with [train] nonfinite = "skip", skips) the step.
 *   What dtype a loss receives: dataset tensors keep the dtype the dataset gave them (e.g. i64
 *   labels); encoder outputs come in the backend's param_dtype, or autocast's dtype for the
 *   ops autocast lowers: fp32 -> f32; bf16, bf16_remainder, bf16_pure -> bf16; fp16 -> f16
 *   (LibTorch's autocast promotes its fp32-list ops, e.g. log_softmax, to f32). A loss must
 *   accept any floating dtype; a term may be of any floating dtype; an explicit grad must have
 *   the term's shape, dtype and device. Computing a term's reduction in f32 is recommended.
 *   A plain-C plugin reads bf16 and f16 data with tessera/half.h (tsr_bf16_to_f32, ...).
 *
 * 7b. A loss in plain C: the explicit-gradient pattern
 *   A C plugin cannot build autograd graphs: it only reads tensors (tensor_to_dlpack) and makes
 *   new ones (tensor_from_dlpack), which have no grad_fn. So it emits the tensor it was GIVEN
 *   (an encoder's output, which is in the graph) as a non-scalar term, with the gradient of its
 *   loss with respect to that tensor computed by hand, and the loss itself as `value`:
 *     L = sum_i (p_i - t_i)^2 / n           ->  dL/dp_i = 2 (p_i - t_i) / n
 *       tsr_tensor* p = host->set_get(batch, "prediction");    (borrowed, in the graph)
 *       DLManagedTensor* pm; host->tensor_to_dlpack(p, &pm);   (read p's data; pm->deleter(pm))
 *       ... compute L and fill a malloc'ed float buffer g with dL/dp, p's shape ...
 *       tsr_tensor* grad; host->tensor_from_dlpack(host->ctx, &g_managed, &grad);
 *       tsr_term term = {0};
 *       term.struct_size = sizeof term; term.name = "mse";
 *       term.tensor = p; term.grad = grad;  (same shape, dtype, device as p)
 *       term.weight = 1.0; term.has_value = 1; term.value = L;
 *       host->emit_term(sink, &term); host->tensor_release(grad);
 *   The core then backwards p with seed grad * weights (section 7), exactly what autograd would
 *   do for L itself, and logs L. Under bf16/fp16 backends p may be BF16/F16: then the gradient
 *   buffer must be in p's dtype too (tsr_f32_to_bf16 / tsr_f32_to_f16 of tessera/half.h), or
 *   the plugin refuses the dtype by name. A complete plugin, with strides, errors, ownership
 *   and threading written out: plugins/losses/mse_c/mse_c.c (installed with the SDK as
 *   share/tessera/examples/mse_c.c; `cmake -S <prefix>/share/tessera/examples` builds it).
 *
 * 8. Datasets (since 1.2): what the core asks of a tessera.dataset/1 plugin
 *   The [data] table names the plugin (`dataset = "NAME"`); the core's keys there (batch sizes,
 *   workers, splits, limits) are the core's, every other key is the plugin's own schema. After
 *   create the core reads the splits and fields once. Then its loader calls get from
 *   [data] workers threads at once (or the training thread when workers = 0), for exactly the
 *   examples of this rank's rows of each global batch, in an order that depends only on the
 *   seed and epoch. A varying-length field is padded by the loader (tsr_field_info). Tensors
 *   from get are CPU tensors; the core moves batches to the device. A dataset never sees a
 *   rank, a batch or a step: resume (also on another world size) is the core's business.
 * ======================================================================================= */
#ifndef TESSERA_ABI_H
#define TESSERA_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TSR_ABI_MAJOR 1
#define TSR_ABI_MINOR 4
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
#define TSR_KIND_DATASET "tessera.dataset/1" /* since 1.2 */

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

/* ---- opaque handles (all owned by the core; a plugin never frees one itself) -------- */
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
                               NULL means the key is required. Must satisfy the key's own
                               range / allowed values, or the library is refused at load */
  const char* doc;          /* one line for `tessera plugins inspect` */
  double min_value;         /* inclusive bounds for INT/FLOAT; use min > max for none */
  double max_value;
  /* since 1.1 */
  const char* allowed_values; /* STRING keys: NULL = any string, or the allowed values
                                 separated by '|' ("sum|mean"); a config value outside them is
                                 refused with its file:line:col and the nearest allowed value */
} tsr_config_key;
/* A plugin's keys form one array (descriptor->config_keys) of structs of one size: the core
 * reads key i at byte offset i * config_keys[0].struct_size, so an array built against 1.0
 * (56-byte keys, no allowed_values) and one built against 1.1 (64 bytes) both load. A
 * struct_size below 56 is refused. */

/* ---- loss terms ------------------------------------------------------------------ */
/* One term a loss reducer emits (see section 7 of the header comment for how its gradient seed
 * is formed). The struct and its fields are borrowed by emit_term: the core copies the name
 * and retains the tensors. */
typedef struct tsr_term {
  uint32_t struct_size;
  const char* name;   /* unique within one step over all reducers; borrowed */
  tsr_tensor* tensor; /* borrowed; the sink retains what it keeps */
  tsr_tensor* grad;   /* borrowed, may be NULL: implicit 1 for a scalar tensor;
                         required (same shape, dtype, device) for a non-scalar one */
  double weight;      /* multiplies the term's gradient seed (and its logged value), on top of
                         the [[loss]] table's `weight` */
  int32_t has_value;  /* nonzero: `value` is the scalar loss this term stands for (what the
                         metrics log, e.g. for a non-scalar term with an explicit gradient);
                         zero: the core logs the mean of `tensor` */
  double value;
  int32_t normalize;  /* since 1.3: TSR_NORMALIZE_*; a term of a 1.2 plugin (struct_size 56) is
                         TSR_NORMALIZE_MEAN. See section 7. */
} tsr_term;

/* How the core turns a term into the global batch's loss (tsr_term.normalize, since 1.3). */
enum {
  TSR_NORMALIZE_MEAN = 0, /* the term is a mean over its micro-batch: seed / N (N micro-batches) */
  TSR_NORMALIZE_UNITS = 1 /* the term is a SUM over units (e.g. target tokens): seed / U, U the
                             units of the whole global batch, counted by the loss's count_units */
};

/* ---- parameters ------------------------------------------------------------------ */
/* The core's callback, called by a plugin's `parameters`/`buffers` once per tensor, on the
 * thread that called `parameters`/`buffers`, before that call returns. user: pass back what the
 * core gave. name: borrowed (the core copies it). tensor: borrowed (the core keeps its own
 * reference to the tensor object). Returns TSR_OK to continue; on any other status the plugin
 * stops visiting and returns that status. */
typedef tsr_status (*tsr_param_visitor)(void* user, const char* name, tsr_tensor* tensor);

/* ---- the host table: what the core offers every plugin ----------------------------- */
/* One table per instance, passed to create. It (and ctx) lives until the instance's destroy
 * returns; a plugin may keep the pointer. Every function is thread-safe unless its comment
 * restricts it, and may be called during any call of the core into the plugin. */
typedef struct tsr_host {
  uint32_t struct_size;
  uint32_t abi_major; /* the core's ABI version */
  uint32_t abi_minor;
  tsr_host_ctx* ctx;  /* pass back as the first argument where asked */

  /* Logging, any thread. msg: borrowed UTF-8, copied. The core prefixes the instance's name. */
  void (*log)(tsr_host_ctx* ctx, int32_t level, const char* msg);
  /* Sets the calling thread's error message for the non-OK status about to be returned; call
   * it on the thread that returns the status. msg: borrowed, copied. */
  void (*set_error)(tsr_host_ctx* ctx, const char* msg);

  /* Config access, any thread: this instance's own table, already validated against the
   * schema the descriptor declares, defaults filled in. A key not in the schema is
   * TSR_ERR_NOT_FOUND; a type mismatch is TSR_ERR_TYPE. *out of get_string and
   * get_string_array_item is borrowed and lives as long as the instance. cfg: the pointer
   * create received. get_string_array_size + get_string_array_item read STRING_ARRAY keys. */
  tsr_status (*config_get_int)(const tsr_config* cfg, const char* key, int64_t* out);
  tsr_status (*config_get_float)(const tsr_config* cfg, const char* key, double* out);
  tsr_status (*config_get_bool)(const tsr_config* cfg, const char* key, int32_t* out);
  tsr_status (*config_get_string)(const tsr_config* cfg, const char* key, const char** out);
  tsr_status (*config_get_string_array_size)(const tsr_config* cfg, const char* key,
                                             int64_t* out);
  tsr_status (*config_get_string_array_item)(const tsr_config* cfg, const char* key,
                                             int64_t index, const char** out);

  /* Tensor handles, any thread (also autograd threads). retain: +1 reference; release: -1,
   * frees the handle at zero (the tensor's memory lives on while the core uses it). NULL is a
   * no-op for both. A handle the plugin retained stays valid after the call that lent it. */
  void (*tensor_retain)(tsr_tensor* t);
  void (*tensor_release)(tsr_tensor* t);
  /* Shape and type queries on a handle the caller holds; any thread. tensor_dtype: TSR_DTYPE_*
   * (TSR_DTYPE_NONE for a dtype the ABI has no code for); tensor_size of a dim out of range: -1. */
  int32_t (*tensor_dtype)(const tsr_tensor* t);
  int64_t (*tensor_ndim)(const tsr_tensor* t);
  int64_t (*tensor_size)(const tsr_tensor* t, int64_t dim);
  int64_t (*tensor_numel)(const tsr_tensor* t);
  /* Raw storage pointer of a contiguous CPU or device tensor (NULL if not contiguous), any
   * thread. Valid while the handle lives. A device pointer is read on the current stream. */
  void* (*tensor_data)(tsr_tensor* t);

  /* DLPack bridge, for plugins that do not use LibTorch; any thread.
   * to_dlpack: t borrowed; *out is a new DLManagedTensor sharing t's memory; the caller
   *            calls (*out)->deleter(*out) when done.
   * from_dlpack: src is consumed (its deleter is called by the core when the tensor
   *            dies, also on error; the plugin's library stays loaded until then);
   *            *out is a new reference. */
  tsr_status (*tensor_to_dlpack)(tsr_tensor* t, struct DLManagedTensor** out);
  tsr_status (*tensor_from_dlpack)(tsr_host_ctx* ctx, struct DLManagedTensor* src,
                                   tsr_tensor** out);

  /* Named tensors of a batch; set is the one forward/compute received and is valid only
   * during that call. Both functions may be called from any thread during that call (they
   * lock the set).
   * set_get: name borrowed. Returns NULL if absent, else a handle BORROWED FROM THE SET: valid
   *          until the forward/compute call that received the set returns, whichever thread
   *          got it (the set releases every handle it lent when that call ends). Retain it with
   *          tensor_retain to keep it longer. Handles lent earlier stay valid after a set_put
   *          of the same name (they keep the tensor they returned).
   * set_put: name and t borrowed (the set retains t's tensor); replaces an existing entry of
   *          that name. TSR_ERR_INVALID_ARGUMENT on a loss's read-only batch. */
  tsr_tensor* (*set_get)(const tsr_tensor_set* set, const char* name);
  tsr_status (*set_put)(tsr_tensor_set* set, const char* name, tsr_tensor* t);

  /* Loss terms: only during the compute call that received sink, any thread (it locks the
   * sink). term and its fields are borrowed; the sink copies the name and retains the
   * tensors. TSR_ERR_INVALID_ARGUMENT for a term without name or tensor, or too small. */
  tsr_status (*emit_term)(tsr_term_sink* sink, const tsr_term* term);

  /* Optimizer-state and master-weight buffers for precision backends: a new zero-filled
   * 1-D tensor of numel elements, on the parameters' device, that the core tracks by
   * name (unique per instance) and category (TSR_STATE_*) for memory accounting and
   * checkpoints. *out is a new reference (the core keeps its own; the buffer lives until the
   * instance is destroyed). Training thread only, from within init_shard / init_shard_for;
   * TSR_ERR_UNSUPPORTED for other kinds. Name a buffer "<shard name>.<state>" (e.g.
   * "f32.exp_avg"): checkpoints store a TSR_STATE_OPTIMIZER buffer by its <state> part, so
   * another backend that uses the same <state> names resumes the moments. A TSR_STATE_SCALARS
   * buffer (since 1.4) is in host memory whatever the device, and is stored by its whole name. */
  tsr_status (*alloc_state)(tsr_host_ctx* ctx, const char* name, int32_t category,
                            int32_t dtype, int64_t numel, tsr_tensor** out);

  /* LibTorch bridge for plugins built against the same LibTorch as the core (the loader
   * checks descriptor->torch_version against torch_version below).
   * Any thread. torch_version: static storage.
   * tensor_aten: borrowed pointer to the at::Tensor behind t, valid while t lives.
   * tensor_wrap_aten: at_tensor is a const at::Tensor* (borrowed); returns a new reference. */
  const char* torch_version;
  const void* (*tensor_aten)(const tsr_tensor* t);
  tsr_tensor* (*tensor_wrap_aten)(const void* at_tensor);
} tsr_host;

/* ---- kind: tessera.encoder/1 ------------------------------------------------------ */
/* Every function: training thread, never concurrently for one instance. */
typedef struct tsr_encoder_vtable {
  uint32_t struct_size;
  /* Visits every trainable parameter (stable names, stable order) by calling visit(user, name,
   * tensor) before returning. Called once after create, before any forward. The core then
   * keeps each parameter's storage inside a flat buffer it owns (the tensor objects the plugin
   * holds now view it, in the backend's param_dtype): the plugin must keep using the same
   * tensor objects and must not replace them or their storage. */
  tsr_status (*parameters)(tsr_instance* self, tsr_param_visitor visit, void* user);
  /* Optional. training != 0 selects training behaviour (dropout etc.); called before the
   * training steps and around evaluations. */
  tsr_status (*set_training)(tsr_instance* self, int32_t training);
  /* Reads named inputs from batch (host->set_get) and writes named outputs into it
   * (host->set_put). Called once per micro-batch (and per evaluation batch), under autocast when
   * the precision backend asks for it. batch: borrowed, valid until return; what set_get lent
   * is released when forward returns. Outputs must stay in the autograd graph. May call every
   * host function except alloc_state. */
  tsr_status (*forward)(tsr_instance* self, tsr_tensor_set* batch);
  /* Optional (NULL = none): state that is not trained but must survive a checkpoint (e.g.
   * BatchNorm running statistics), visited like parameters at each checkpoint save and load;
   * the core writes restored values into the same tensors in place. */
  tsr_status (*buffers)(tsr_instance* self, tsr_param_visitor visit, void* user);
  /* Since 1.3; optional (NULL = unknown). The model FLOPs of this encoder's forward AND backward
   * over batch (called after forward returned: batch holds its inputs and outputs; borrowed,
   * read-only, valid until return), counting a multiply-add as 2 FLOPs and no recomputation
   * (e.g. 6 x parameters x tokens + attention's 12 x layers x d x T per token for a GPT). The core
   * divides it by the step time and the device's peak for the MFU it logs. */
  tsr_status (*flops)(tsr_instance* self, const tsr_tensor_set* batch, double* flops);
} tsr_encoder_vtable;

/* ---- kind: tessera.loss/1 --------------------------------------------------------- */
/* Every function: training thread, never concurrently for one instance. */
typedef struct tsr_loss_vtable {
  uint32_t struct_size;
  /* Reads named tensors (batch: borrowed, read-only, valid until return) and emits one or more
   * terms into sink (borrowed, valid until return) with host->emit_term. Called once per
   * micro-batch after every encoder's forward, under the same autocast; with [[loss]] gather
   * the batch holds the gathered rows of every rank. Terms must stay in the autograd graph
   * (the core backwards them after compute returns; see section 7 for seeds and dtypes). */
  tsr_status (*compute)(tsr_instance* self, const tsr_tensor_set* batch, tsr_term_sink* sink);
  /* Optional (NULL = none): trainable parameters of the loss itself, e.g. a learned
   * temperature; same contract as the encoder's `parameters`. */
  tsr_status (*parameters)(tsr_instance* self, tsr_param_visitor visit, void* user);
  /* Since 1.3; optional (NULL = the loss emits no TSR_NORMALIZE_UNITS terms). How many units
   * (e.g. target tokens that are not ignored) this micro-batch holds for the terms compute will
   * emit with TSR_NORMALIZE_UNITS. Called on every micro-batch of an optimizer step, BEFORE the
   * step's first forward, with the dataset's tensors only (batch: borrowed, read-only, valid
   * until return; not gathered). *units: 0 or more; or -1: this instance emits no such terms
   * (e.g. a loss whose config asks for means), and the core stops asking it. */
  tsr_status (*count_units)(tsr_instance* self, const tsr_tensor_set* batch, int64_t* units);
} tsr_loss_vtable;

/* ---- kind: tessera.precision/1 ---------------------------------------------------- */
enum {
  TSR_MASTER_NONE = 0,       /* parameters are the master copy */
  TSR_MASTER_FP32 = 1,       /* a separate fp32 copy */
  TSR_MASTER_REMAINDER16 = 2 /* 16-bit remainder that with bf16 params is exact fp32 */
};
enum { TSR_OPTIM_ADAMW = 0, TSR_OPTIM_SGD = 1, TSR_OPTIM_LION = 2 /* since 1.1 */ };
/* alloc_state categories. OPTIMIZER and MASTER buffers run along a shard (numel = the shard's),
 * live on its device, count in bytes/param, and are split and resharded with it in checkpoints.
 * SCALARS (since 1.4; a core of 1.3 or older refuses it with TSR_ERR_INVALID_ARGUMENT) is the
 * backend's own small state that is the same on every rank, e.g. a loss scale and its counters:
 * any numel and dtype, in host memory (read and written directly, no device sync), not counted
 * per parameter, saved once per checkpoint (rank 0's) and restored into every rank whatever the
 * world size. Allocate it once per instance (not per shard), with a name of its own. A checkpoint
 * without it (written by another backend) leaves it as the backend initialised it. */
enum { TSR_STATE_OPTIMIZER = 0, TSR_STATE_MASTER = 1, TSR_STATE_SCALARS = 2 };

typedef struct tsr_precision_info {
  uint32_t struct_size;
  int32_t param_dtype;    /* dtype parameters are kept in for compute */
  int32_t grad_dtype;     /* dtype of the gradient buffer */
  int32_t master_policy;  /* TSR_MASTER_* */
  int32_t state_dtype;    /* optimizer moments */
  int32_t autocast_dtype; /* TSR_DTYPE_NONE for no autocast */
} tsr_precision_info;

/* A backend keeps ALL of its state (moments, masters, remainders; its loss scale and counters
 * in a TSR_STATE_SCALARS buffer) in buffers from host->alloc_state: the core accounts for their
 * memory and saves and restores optimizer states and scalars with checkpoints by name; the master goes through
 * export_master / import_master as exact fp32, so a checkpoint converts between backends and
 * the core knows no number format. */

/* One contiguous shard of one flat buffer (this rank's range of the model's parameters of one
 * dtype). Borrowed by every call that receives it: the struct and its handles are valid until
 * the call returns (retain a handle to keep it). The memory behind params and grads is the same
 * for every call with the same name, so a backend may key its states by `name`. */
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

/* The optimizer and its hyper-parameters for one update; borrowed by the call that receives it. */
typedef struct tsr_optim_step {
  uint32_t struct_size;
  int32_t algorithm;    /* TSR_OPTIM_* */
  int64_t step;         /* 1-based count of optimizer steps, for bias correction */
  double lr;
  double beta1, beta2, eps;   /* AdamW; Lion uses beta1, beta2 */
  double momentum;            /* SGD */
  int32_t nesterov;           /* SGD */
  double weight_decay;        /* decoupled (AdamW, Lion) / L2 (SGD) */
  double grad_scale;          /* multiply gradients by this first (unscale x clip) */
} tsr_optim_step;

/* Every function: training thread, never concurrently for one instance; the order within a
 * step is in section 6 of the header comment. Kernels run on the current stream of the
 * shard's device (section 5). Only init_shard / init_shard_for may call host->alloc_state. */
typedef struct tsr_precision_vtable {
  uint32_t struct_size;
  /* Called once, right after create. out: the core's struct with struct_size set; fill every
   * field. The core then builds the flat buffers in param_dtype / grad_dtype. */
  tsr_status (*describe)(tsr_instance* self, tsr_precision_info* out);
  /* Called once per shard before the first step (ABI 1.0 backends; a 1.1 backend that fills
   * init_shard_for is not called here): allocate states via host->alloc_state. A backend
   * with a master copy initialises it from shard->params here. */
  tsr_status (*init_shard)(tsr_instance* self, const tsr_flat_shard* shard);
  /* Updates shard->params in place from shard->grads (multiplied by opt->grad_scale, which
   * already includes 1 / loss_scale and the clipping factor). Once per shard and optimizer
   * step, after update_scale did not ask to skip. */
  tsr_status (*step)(tsr_instance* self, const tsr_flat_shard* shard, const tsr_optim_step* opt);
  /* Optional (NULL = no loss scaling): the factor the core multiplies every loss seed by for
   * this optimizer step's backward(s); asked once per step, before its first forward. */
  tsr_status (*loss_scale)(tsr_instance* self, double* out);
  /* Optional: *found_inf = 1 when shard->grads holds a NaN or Inf (before unscaling); leave it
   * 0 otherwise. Once per shard and step, after backward and gradient reduction. */
  tsr_status (*find_overflow)(tsr_instance* self, const tsr_flat_shard* shard, int32_t* found_inf);
  /* Optional: called once per optimizer step, after every find_overflow, with found_inf over
   * all shards and ranks; the backend adapts its loss scale and sets *skip_step = 1 to drop
   * this step's update (no step call follows). An error here (e.g. the scale fell to its
   * minimum) stops training with its message. */
  tsr_status (*update_scale)(tsr_instance* self, int32_t found_inf, int32_t* skip_step);
  /* since 1.1 */
  /* Optional; when present the core calls it INSTEAD of init_shard, once per shard before the
   * first step (and before a checkpoint is restored). opt names the optimizer (algorithm and
   * hyper-parameters; step = 0, lr = the peak rate), so the backend allocates only the states
   * that optimizer needs. shard, opt: borrowed. */
  tsr_status (*init_shard_for)(tsr_instance* self, const tsr_flat_shard* shard, const tsr_optim_step* opt);
  /* since 1.1 */
  /* Optional: writes the shard's exact fp32 master values (the parameters widened when the
   * backend keeps no master) into out (borrowed: 1-D fp32, shard->numel elements, the
   * shard's device, contiguous). Called when a checkpoint is saved, between steps, once per
   * shard. Checkpoints store these, so any backend can load them. Without it the core widens
   * shard->params itself. */
  tsr_status (*export_master)(tsr_instance* self, const tsr_flat_shard* shard, tsr_tensor* out);
  /* since 1.1 */
  /* Optional: sets the shard's master from in (borrowed: 1-D fp32, shard->numel elements, the
   * shard's device, contiguous) and the parameters from the master, rounded as the backend's
   * update rounds them. Called when a checkpoint is loaded, after init_shard_for, once per
   * shard. Without it the core casts in to param_dtype (a 1.0 backend's master is then not
   * restored exactly; the core warns). */
  tsr_status (*import_master)(tsr_instance* self, const tsr_flat_shard* shard, const tsr_tensor* in);
} tsr_precision_vtable;

/* ---- kind: tessera.dataset/1 (since 1.2) ------------------------------------------- */
/* A dataset describes its splits and the fields of its examples, and serves one example by
 * index. The core owns everything that must be the same for every dataset: the seeded order of
 * each epoch, splitting the global batch over ranks (each rank asks only for its own rows),
 * collation into batches, prefetching on worker threads, and the position saved in
 * checkpoints. So `get` is a pure function of its request: the same request gives the same
 * tensors, whichever thread asks and in whatever order (randomness, e.g. augmentation or a
 * caption choice, comes from request->seed, epoch and index only). */
#define TSR_FIELD_MAX_DIMS 8

/* One field of every example, e.g. "image" u8 (3, 64, 64) or "input_ids" i64 (-1). */
typedef struct tsr_field_info {
  uint32_t struct_size;
  const char* name;      /* the batch tensor's name; lives as long as the instance */
  int32_t dtype;         /* TSR_DTYPE_* of every example's tensor */
  int32_t ndim;          /* dims of ONE example (0: a scalar, e.g. a class label), <= 8 */
  int64_t shape[TSR_FIELD_MAX_DIMS]; /* sizes; -1 = varies between examples. The loader pads a
                                        varying dim to the batch's longest with pad_value and
                                        adds "<name>_len" (B,) i64 holding each example's size
                                        along the first varying dim */
  double pad_value;      /* what a varying dim is padded with */
  const char* doc;       /* one line for `tessera data inspect`; may be NULL */
} tsr_field_info;

/* One split, e.g. "train" with 60000 examples. */
typedef struct tsr_split_info {
  uint32_t struct_size;
  const char* name;      /* lives as long as the instance */
  int64_t size;          /* examples; >= 0 */
} tsr_split_info;

/* Which example to serve; borrowed by get. */
typedef struct tsr_example_request {
  uint32_t struct_size;
  const char* split;     /* one of the split names */
  int64_t index;         /* 0 <= index < the split's size */
  int64_t epoch;         /* the training epoch (0-based); 0 for evaluation */
  uint64_t seed;         /* the experiment's seed */
} tsr_example_request;

/* Metadata names the core reads (a dataset may expose others for its own tools):
 *   metadata_text "class_names": one name per class label, in label order.
 *   metadata "zero_shot_prompts": prompts for zero-shot evaluation: tensors named like the
 *     fields a text encoder reads, each (P, ...) (one row per prompt, padded like a batch),
 *     plus "class" (P,) i64, the class each prompt describes. metadata_text
 *     "zero_shot_prompts": the prompts as text (for inspection). */
typedef struct tsr_dataset_vtable {
  uint32_t struct_size;
  /* Training thread, after create; the answers never change for an instance. */
  tsr_status (*num_splits)(tsr_instance* self, int64_t* out);
  tsr_status (*split_info)(tsr_instance* self, int64_t index, tsr_split_info* out);
  tsr_status (*num_fields)(tsr_instance* self, int64_t* out);
  tsr_status (*field_info)(tsr_instance* self, int64_t index, tsr_field_info* out);
  /* ANY thread, CONCURRENTLY with itself and with metadata_text/encode_text/decode_text (the
   * core's worker threads fetch different examples at once). Writes every field of the
   * requested example into out with host->set_put, each tensor on the CPU, of the declared
   * dtype and shape (varying dims free). req, out: borrowed, valid until return. An example
   * that cannot be read (a corrupt file) is an error whose message names the file; the core
   * stops the run with it. */
  tsr_status (*get)(tsr_instance* self, const tsr_example_request* req, tsr_tensor_set* out);
  /* Optional. Training thread. Writes the named metadata's tensors into out (set_put);
   * TSR_ERR_NOT_FOUND when the dataset has no metadata of that name. */
  tsr_status (*metadata)(tsr_instance* self, const char* name, tsr_tensor_set* out);
  /* Optional. Any thread. *out = item `index` of the named list of strings (lives as long as
   * the instance); TSR_ERR_NOT_FOUND past its end or for an unknown name. */
  tsr_status (*metadata_text)(tsr_instance* self, const char* name, int64_t index, const char** out);
  /* Optional: the tokenizer of a text field (e.g. for generation). Any thread.
   * encode_text: text borrowed UTF-8; *out a new reference, (n,) i64 ids.
   * decode_text: ids borrowed, 1-D integer; *out a new reference, (bytes,) u8 UTF-8 text. */
  tsr_status (*encode_text)(tsr_instance* self, const char* field, const char* text, tsr_tensor** out);
  tsr_status (*decode_text)(tsr_instance* self, const char* field, const tsr_tensor* ids, tsr_tensor** out);
} tsr_dataset_vtable;

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
  const tsr_config_key* config_keys; /* num_config_keys entries, static storage; all entries
                                        of one struct_size (the core reads them with that stride) */
  uint32_t num_config_keys;
  /* Creates an instance; training thread. host: borrowed, outlives the instance. cfg:
   * borrowed, outlives the instance (the validated table; read it with host->config_get_*).
   * *out: a new instance, released with destroy. May call the log, error, config and tensor
   * functions of host (not alloc_state: a backend allocates its states in init_shard). */
  tsr_status (*create)(const tsr_host* host, const tsr_config* cfg, tsr_instance** out);
  /* Destroys an instance; training thread, after its last call. Releases what it retained. */
  void (*destroy)(tsr_instance* self);
  const void* vtable;          /* tsr_<kind>_vtable for the kind above, static storage */
} tsr_plugin_descriptor;

/* The one exported symbol: returns a descriptor with static storage duration. */
typedef const tsr_plugin_descriptor* (*tsr_entry_fn)(void);

/* ---- layout checks for ABI 1.0, 1.1 and 1.2 (x86-64 / aarch64 LP64) --------------------- */
#if defined(__cplusplus)
#define TSR_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define TSR_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif
#if UINTPTR_MAX == 0xFFFFFFFFFFFFFFFFu
TSR_STATIC_ASSERT(sizeof(tsr_config_key) == 64, "tsr_config_key layout changed");
TSR_STATIC_ASSERT(offsetof(tsr_config_key, allowed_values) == 56, "tsr_config_key layout (1.1)");
TSR_STATIC_ASSERT(offsetof(tsr_config_key, default_toml) == 24, "tsr_config_key layout");
TSR_STATIC_ASSERT(offsetof(tsr_config_key, max_value) == 48, "tsr_config_key layout (1.0 size: 56)");
TSR_STATIC_ASSERT(sizeof(tsr_term) == 64, "tsr_term layout changed (1.3)");
TSR_STATIC_ASSERT(offsetof(tsr_term, normalize) == 56, "tsr_term layout (1.2 size: 56)");
TSR_STATIC_ASSERT(offsetof(tsr_term, weight) == 32, "tsr_term layout");
TSR_STATIC_ASSERT(offsetof(tsr_host, log) == 24, "tsr_host layout");
TSR_STATIC_ASSERT(offsetof(tsr_host, alloc_state) == 184, "tsr_host layout");
TSR_STATIC_ASSERT(sizeof(tsr_host) == 216, "tsr_host layout changed");
TSR_STATIC_ASSERT(offsetof(tsr_host, torch_version) == 192, "tsr_host layout");
TSR_STATIC_ASSERT(sizeof(tsr_encoder_vtable) == 48, "tsr_encoder_vtable layout changed (1.3)");
TSR_STATIC_ASSERT(offsetof(tsr_encoder_vtable, flops) == 40, "tsr_encoder_vtable layout (1.2 size: 40)");
TSR_STATIC_ASSERT(sizeof(tsr_loss_vtable) == 32, "tsr_loss_vtable layout changed (1.3)");
TSR_STATIC_ASSERT(offsetof(tsr_loss_vtable, count_units) == 24, "tsr_loss_vtable layout (1.2 size: 24)");
TSR_STATIC_ASSERT(offsetof(tsr_precision_vtable, update_scale) == 48, "tsr_precision_vtable layout");
TSR_STATIC_ASSERT(offsetof(tsr_precision_vtable, init_shard_for) == 56, "tsr_precision_vtable layout (1.1)");
TSR_STATIC_ASSERT(offsetof(tsr_precision_vtable, export_master) == 64, "tsr_precision_vtable layout (1.1)");
TSR_STATIC_ASSERT(offsetof(tsr_precision_vtable, import_master) == 72, "tsr_precision_vtable layout (1.1)");
TSR_STATIC_ASSERT(sizeof(tsr_precision_vtable) == 80, "tsr_precision_vtable layout changed");
TSR_STATIC_ASSERT(sizeof(tsr_precision_info) == 24, "tsr_precision_info layout changed");
TSR_STATIC_ASSERT(sizeof(tsr_flat_shard) == 56, "tsr_flat_shard layout changed");
TSR_STATIC_ASSERT(offsetof(tsr_optim_step, grad_scale) == 72, "tsr_optim_step layout");
TSR_STATIC_ASSERT(sizeof(tsr_optim_step) == 80, "tsr_optim_step layout changed");
TSR_STATIC_ASSERT(sizeof(tsr_field_info) == 104, "tsr_field_info layout changed (1.2)");
TSR_STATIC_ASSERT(offsetof(tsr_field_info, shape) == 24, "tsr_field_info layout (1.2)");
TSR_STATIC_ASSERT(sizeof(tsr_split_info) == 24, "tsr_split_info layout changed (1.2)");
TSR_STATIC_ASSERT(sizeof(tsr_example_request) == 40, "tsr_example_request layout changed (1.2)");
TSR_STATIC_ASSERT(sizeof(tsr_dataset_vtable) == 80, "tsr_dataset_vtable layout changed (1.2)");
TSR_STATIC_ASSERT(offsetof(tsr_plugin_descriptor, create) == 72, "descriptor layout");
TSR_STATIC_ASSERT(sizeof(tsr_plugin_descriptor) == 96, "descriptor layout changed");
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif
#endif /* TESSERA_ABI_H */

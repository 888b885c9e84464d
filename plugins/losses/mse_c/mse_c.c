/* plugins/losses/mse_c/mse_c.c — loss reducer "mse_c", written in plain C11 against abi.h
 * and DLPack only (no LibTorch, no C++): the mean (or sum) squared error of a float32
 * `prediction` against a float32/float64 `target` of the same shape.
 *
 * ---------------------------------------------------------------------------------------
 * How it plugs into the core
 *   compute() reads both tensors from the batch (host->set_get, borrowed handles) through
 *   host->tensor_to_dlpack, walks them with their strides (any layout: transposed and
 *   sliced views are fine), and computes in double
 *       L      = sum((p - t)^2) / N          (reduction = "mean", N = numel)
 *                sum((p - t)^2)              (reduction = "sum")
 *       dL/dp  = 2 (p - t) / N   or   2 (p - t)
 *   The gradient goes into a new compact float32 buffer this plugin allocates and hands
 *   to the core with host->tensor_from_dlpack. It then emits ONE non-scalar term:
 *       { name = `term`, tensor = prediction, grad = dL/dp, weight = 1, value = L }
 *   so the core backwards `prediction` with the explicit gradient and logs L.
 *   The plugin has no trainable parameters (the vtable's `parameters` is NULL).
 *
 * Ownership
 *   - host, cfg: borrowed in create; both outlive the instance. The config strings read
 *     with config_get_string are borrowed and live as long as the instance.
 *   - batch tensors from set_get: borrowed until compute returns; never released here.
 *   - DLManagedTensor from tensor_to_dlpack: owned by this plugin; its deleter is called
 *     on every path once the data has been read.
 *   - the gradient buffer: malloc'ed here and consumed by tensor_from_dlpack (the core
 *     calls grad_deleter when the tensor dies, also on error); the handle it returns is a
 *     new reference, released here after emit_term (the sink retains what it keeps).
 *
 * Errors
 *   Every non-OK status is preceded by host->set_error with a message that names the
 *   configured tensor keys; on error no term is emitted and nothing is leaked.
 *
 * Threading
 *   An instance is immutable after create; compute only touches locals and the host, so
 *   different instances may run concurrently on different threads (the core never calls
 *   one instance concurrently with itself). grad_deleter may run on any thread.
 * --------------------------------------------------------------------------------------- */
#include <dlpack/dlpack.h>
#include <tessera/abi.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mse_instance {
  const tsr_host* host; /* borrowed, outlives the instance */
  const char* prediction; /* borrowed config strings, live as long as the instance */
  const char* target;
  const char* term;
  int32_t sum; /* nonzero: reduction = "sum"; zero: "mean" */
} mse_instance;

/* The gradient buffer and its DLPack wrapper in one allocation:
 * [grad_tensor][ndim x int64 shape][numel x float]. Freed by grad_deleter. */
typedef struct grad_tensor {
  DLManagedTensor managed;
  int64_t* shape;
  float* data;
} grad_tensor;

static void grad_deleter(DLManagedTensor* self) { free(self->manager_ctx); }

/* host->set_error with printf formatting (the message is copied by the host). */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void set_errorf(const tsr_host* h, const char* fmt, ...) {
  char msg[1024];
  va_list args;
  va_start(args, fmt);
  vsnprintf(msg, sizeof msg, fmt, args);
  va_end(args);
  h->set_error(h->ctx, msg);
}

/* Writes "[d0, d1, ...]" into buf (truncated with "..." when it does not fit). */
static void format_shape(const DLTensor* x, char* buf, size_t size) {
  size_t used = 0;
  int n = snprintf(buf, size, "[");
  used = n > 0 ? (size_t)n : 0;
  for (int32_t d = 0; d < x->ndim && used < size; ++d) {
    n = snprintf(buf + used, size - used, d ? ", %lld" : "%lld", (long long)x->shape[d]);
    if (n < 0) break;
    used += (size_t)n;
  }
  if (used < size) {
    snprintf(buf + used, size - used, "]");
  } else if (size >= 4) {
    memcpy(buf + size - 4, "...", 4);
  }
}

static const char* dtype_name(int32_t dtype) {
  switch (dtype) {
    case TSR_DTYPE_F32: return "float32";
    case TSR_DTYPE_F64: return "float64";
    case TSR_DTYPE_F16: return "float16";
    case TSR_DTYPE_BF16: return "bfloat16";
    case TSR_DTYPE_I64: return "int64";
    case TSR_DTYPE_I32: return "int32";
    case TSR_DTYPE_U8: return "uint8";
    case TSR_DTYPE_BOOL: return "bool";
    default: return "an unsupported dtype";
  }
}

static tsr_status create(const tsr_host* host, const tsr_config* cfg, tsr_instance** out) {
  const char* prediction = NULL;
  const char* target = NULL;
  const char* term = NULL;
  const char* reduction = NULL;
  tsr_status st;
  if ((st = host->config_get_string(cfg, "prediction", &prediction)) != TSR_OK ||
      (st = host->config_get_string(cfg, "target", &target)) != TSR_OK ||
      (st = host->config_get_string(cfg, "term", &term)) != TSR_OK ||
      (st = host->config_get_string(cfg, "reduction", &reduction)) != TSR_OK)
    return st; /* the host has set the message */
  int32_t sum;
  if (strcmp(reduction, "mean") == 0) {
    sum = 0;
  } else if (strcmp(reduction, "sum") == 0) {
    sum = 1;
  } else {
    set_errorf(host, "mse_c: reduction must be \"mean\" or \"sum\", got \"%s\"", reduction);
    return TSR_ERR_INVALID_ARGUMENT;
  }
  mse_instance* s = (mse_instance*)calloc(1, sizeof(mse_instance));
  if (!s) {
    host->set_error(host->ctx, "mse_c: out of memory creating the instance");
    return TSR_ERR_OUT_OF_MEMORY;
  }
  s->host = host;
  s->prediction = prediction;
  s->target = target;
  s->term = term;
  s->sum = sum;
  *out = (tsr_instance*)s;
  return TSR_OK;
}

static void destroy(tsr_instance* self) { free(self); }

/* Looks up `key` in the batch, checks its dtype against the accepted ones and exports it
 * through DLPack. On success *handle is borrowed from the batch and *managed is owned by
 * the caller (call its deleter). `role` is "prediction" or "target", for messages. */
static tsr_status read_tensor(const tsr_host* h, const tsr_tensor_set* batch, const char* role, const char* key,
                              int32_t allow_f64, tsr_tensor** handle, DLManagedTensor** managed) {
  tsr_tensor* t = h->set_get(batch, key);
  if (!t) {
    set_errorf(h, "mse_c: the batch has no %s tensor '%s'", role, key);
    return TSR_ERR_NOT_FOUND;
  }
  int32_t dtype = h->tensor_dtype(t);
  if (dtype != TSR_DTYPE_F32 && !(allow_f64 && dtype == TSR_DTYPE_F64)) {
    set_errorf(h, "mse_c: %s '%s' must be %s, got %s", role, key, allow_f64 ? "float32 or float64" : "float32",
               dtype_name(dtype));
    return TSR_ERR_TYPE;
  }
  DLManagedTensor* m = NULL;
  tsr_status st = h->tensor_to_dlpack(t, &m);
  if (st != TSR_OK || !m) {
    set_errorf(h, "mse_c: cannot export %s '%s' through DLPack (status %d)", role, key, (int)st);
    return st != TSR_OK ? st : TSR_ERR_RUNTIME;
  }
  const DLTensor* x = &m->dl_tensor;
  if (x->device.device_type != kDLCPU) {
    m->deleter(m);
    set_errorf(h, "mse_c: %s '%s' must be a CPU tensor", role, key);
    return TSR_ERR_UNSUPPORTED;
  }
  if (x->dtype.code != kDLFloat || x->dtype.lanes != 1 || !(x->dtype.bits == 32 || (allow_f64 && x->dtype.bits == 64))) {
    m->deleter(m);
    set_errorf(h, "mse_c: %s '%s' has an unexpected DLPack dtype", role, key);
    return TSR_ERR_TYPE;
  }
  *handle = t;
  *managed = m;
  return TSR_OK;
}

static int same_shape(const DLTensor* a, const DLTensor* b) {
  if (a->ndim != b->ndim) return 0;
  for (int32_t d = 0; d < a->ndim; ++d)
    if (a->shape[d] != b->shape[d]) return 0;
  return 1;
}

/* Element offset (in elements, from the data start) of the row-major logical index `idx`. */
static int64_t offset_of(const DLTensor* x, const int64_t* idx) {
  int64_t off = 0, compact = 1;
  for (int32_t d = x->ndim - 1; d >= 0; --d) {
    off += idx[d] * (x->strides ? x->strides[d] : compact);
    compact *= x->shape[d];
  }
  return off;
}

static tsr_status compute(tsr_instance* self, const tsr_tensor_set* batch, tsr_term_sink* sink) {
  const mse_instance* s = (const mse_instance*)self;
  const tsr_host* h = s->host;
  tsr_tensor* pred_handle = NULL;
  tsr_tensor* target_handle = NULL;
  DLManagedTensor* pm = NULL;
  DLManagedTensor* tm = NULL;
  tsr_status st = read_tensor(h, batch, "prediction", s->prediction, 0, &pred_handle, &pm);
  if (st != TSR_OK) return st;
  st = read_tensor(h, batch, "target", s->target, 1, &target_handle, &tm);
  if (st != TSR_OK) {
    pm->deleter(pm);
    return st;
  }
  (void)target_handle;
  const DLTensor* p = &pm->dl_tensor;
  const DLTensor* t = &tm->dl_tensor;
  if (!same_shape(p, t)) {
    char ps[256], ts[256];
    format_shape(p, ps, sizeof ps);
    format_shape(t, ts, sizeof ts);
    pm->deleter(pm);
    tm->deleter(tm);
    set_errorf(h, "mse_c: prediction '%s' has shape %s but target '%s' has shape %s; they must match",
               s->prediction, ps, s->target, ts);
    return TSR_ERR_TYPE;
  }
  int64_t n = 1;
  for (int32_t d = 0; d < p->ndim; ++d) n *= p->shape[d];
  if (n == 0 && !s->sum) {
    pm->deleter(pm);
    tm->deleter(tm);
    set_errorf(h, "mse_c: prediction '%s' and target '%s' are empty; their mean squared error is undefined",
               s->prediction, s->target);
    return TSR_ERR_INVALID_ARGUMENT;
  }

  /* One allocation: header, shape, data (int64 then float keeps both aligned). */
  const size_t ndim = (size_t)p->ndim;
  const size_t header = (sizeof(grad_tensor) + sizeof(int64_t) - 1) / sizeof(int64_t) * sizeof(int64_t);
  grad_tensor* g = (grad_tensor*)malloc(header + ndim * sizeof(int64_t) + (size_t)n * sizeof(float));
  /* idx: the running row-major index (odometer) over both tensors. */
  int64_t* idx = (int64_t*)calloc(ndim ? ndim : 1, sizeof(int64_t));
  if (!g || !idx) {
    free(g);
    free(idx);
    pm->deleter(pm);
    tm->deleter(tm);
    set_errorf(h, "mse_c: out of memory for the gradient of '%s'", s->prediction);
    return TSR_ERR_OUT_OF_MEMORY;
  }
  g->shape = (int64_t*)((char*)g + header);
  g->data = (float*)(g->shape + ndim);

  const float* pd = (const float*)(const void*)((const char*)p->data + p->byte_offset);
  const char* tbase = (const char*)t->data + t->byte_offset;
  const int target_f64 = t->dtype.bits == 64;
  const double scale = s->sum ? 2.0 : 2.0 / (double)n;
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double pv = (double)pd[offset_of(p, idx)];
    const int64_t toff = offset_of(t, idx);
    const double tv = target_f64 ? ((const double*)(const void*)tbase)[toff] : (double)((const float*)(const void*)tbase)[toff];
    const double diff = pv - tv;
    acc += diff * diff;
    g->data[i] = (float)(scale * diff);
    for (int32_t d = p->ndim - 1; d >= 0; --d) { /* advance the odometer */
      if (++idx[d] < p->shape[d]) break;
      idx[d] = 0;
    }
  }
  const double loss = s->sum ? acc : acc / (double)n;
  free(idx);

  memset(&g->managed, 0, sizeof(g->managed));
  if (ndim) memcpy(g->shape, p->shape, ndim * sizeof(int64_t));
  g->managed.dl_tensor.data = g->data;
  g->managed.dl_tensor.device.device_type = kDLCPU;
  g->managed.dl_tensor.device.device_id = 0;
  g->managed.dl_tensor.ndim = p->ndim;
  g->managed.dl_tensor.dtype.code = kDLFloat;
  g->managed.dl_tensor.dtype.bits = 32;
  g->managed.dl_tensor.dtype.lanes = 1;
  g->managed.dl_tensor.shape = g->shape;
  g->managed.dl_tensor.strides = NULL; /* compact row-major */
  g->managed.dl_tensor.byte_offset = 0;
  g->managed.manager_ctx = g;
  g->managed.deleter = grad_deleter;
  pm->deleter(pm); /* the data has been read; pred_handle stays valid (borrowed) */
  tm->deleter(tm);

  tsr_tensor* grad = NULL;
  st = h->tensor_from_dlpack(h->ctx, &g->managed, &grad); /* consumes g, also on error */
  if (st != TSR_OK || !grad) {
    set_errorf(h, "mse_c: the core refused the gradient buffer of '%s' (status %d)", s->prediction, (int)st);
    return st != TSR_OK ? st : TSR_ERR_RUNTIME;
  }

  tsr_term term;
  memset(&term, 0, sizeof term);
  term.struct_size = sizeof(tsr_term);
  term.name = s->term;
  term.tensor = pred_handle; /* borrowed from the batch; the sink retains it */
  term.grad = grad;
  term.weight = 1.0;
  term.has_value = 1;
  term.value = loss;
  st = h->emit_term(sink, &term);
  h->tensor_release(grad); /* the sink holds its own reference */
  if (st != TSR_OK) {
    set_errorf(h, "mse_c: emit_term refused term '%s' (status %d)", s->term, (int)st);
    return st;
  }
  return TSR_OK;
}

static const tsr_loss_vtable vtable = {sizeof(tsr_loss_vtable), compute, NULL, NULL};
static const tsr_config_key keys[] = {
    {sizeof(tsr_config_key), "prediction", TSR_CONFIG_STRING, "\"prediction\"",
     "batch tensor of predictions, float32, any shape (backwarded with the explicit gradient)", 1.0, 0.0, NULL},
    {sizeof(tsr_config_key), "target", TSR_CONFIG_STRING, "\"target\"",
     "batch tensor of targets, float32 or float64, same shape as prediction", 1.0, 0.0, NULL},
    {sizeof(tsr_config_key), "term", TSR_CONFIG_STRING, "\"mse\"", "name of the emitted term", 1.0, 0.0, NULL},
    {sizeof(tsr_config_key), "reduction", TSR_CONFIG_STRING, "\"mean\"",
     "\"mean\" (over all elements) or \"sum\" of the squared errors", 1.0, 0.0, "mean|sum"},
};
static const tsr_plugin_descriptor descriptor = {
    sizeof(tsr_plugin_descriptor), TSR_ABI_MAJOR, TSR_ABI_MINOR, "mse_c", "1.0.0", TSR_KIND_LOSS,
    "Mean (or summed) squared error of a float32 prediction against a target, in plain C through "
    "DLPack; emits one non-scalar term with its explicit gradient.",
    NULL, keys, sizeof keys / sizeof keys[0], create, destroy, &vtable};

TSR_EXPORT const tsr_plugin_descriptor* tessera_plugin_entry(void) { return &descriptor; }

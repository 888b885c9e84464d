/* tests/plugins/c_scale.c — an encoder written in plain C against abi.h and DLPack only:
 * reads float32 tensor `input`, writes `output` = factor * input into memory it owns. */
#include <dlpack/dlpack.h>
#include <tessera/abi.h>

#include <stdlib.h>
#include <string.h>

typedef struct scale_instance {
  const tsr_host* host;
  double factor;
  const char* input;
  const char* output;
} scale_instance;

/* The output buffer and its DLPack wrapper, freed by the deleter when the core is done. */
typedef struct owned_tensor {
  DLManagedTensor managed;
  int64_t shape[8];
  float data[];
} owned_tensor;

static void owned_deleter(DLManagedTensor* self) { free(self->manager_ctx); }

static tsr_status create(const tsr_host* host, const tsr_config* cfg, tsr_instance** out) {
  scale_instance* s = (scale_instance*)calloc(1, sizeof(scale_instance));
  if (!s) return TSR_ERR_OUT_OF_MEMORY;
  s->host = host;
  if (host->config_get_float(cfg, "factor", &s->factor) != TSR_OK ||
      host->config_get_string(cfg, "input", &s->input) != TSR_OK ||
      host->config_get_string(cfg, "output", &s->output) != TSR_OK) {
    free(s);
    return TSR_ERR_INVALID_ARGUMENT;
  }
  *out = (tsr_instance*)s;
  return TSR_OK;
}
static void destroy(tsr_instance* self) { free(self); }
static tsr_status parameters(tsr_instance* self, tsr_param_visitor visit, void* user) {
  (void)self; (void)visit; (void)user;
  return TSR_OK; /* no trainable parameters */
}

static tsr_status forward(tsr_instance* self, tsr_tensor_set* batch) {
  scale_instance* s = (scale_instance*)self;
  const tsr_host* h = s->host;
  tsr_tensor* in = h->set_get(batch, s->input);
  if (!in) {
    h->set_error(h->ctx, "c_scale: the batch has no input tensor");
    return TSR_ERR_NOT_FOUND;
  }
  DLManagedTensor* src = NULL;
  tsr_status st = h->tensor_to_dlpack(in, &src);
  if (st != TSR_OK) return st;
  DLTensor* x = &src->dl_tensor;
  if (x->dtype.code != kDLFloat || x->dtype.bits != 32 || x->device.device_type != kDLCPU || x->ndim > 8) {
    src->deleter(src);
    h->set_error(h->ctx, "c_scale: input must be a float32 CPU tensor of at most 8 dims");
    return TSR_ERR_TYPE;
  }
  int64_t n = 1;
  for (int32_t d = 0; d < x->ndim; ++d) n *= x->shape[d];
  owned_tensor* o = (owned_tensor*)malloc(sizeof(owned_tensor) + (size_t)n * sizeof(float));
  if (!o) {
    src->deleter(src);
    return TSR_ERR_OUT_OF_MEMORY;
  }
  /* Walk the input with its strides (it may be a non-contiguous view). */
  const float* xd = (const float*)((const char*)x->data + x->byte_offset);
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, off = 0;
    for (int32_t d = x->ndim - 1; d >= 0; --d) {
      int64_t idx = rem % x->shape[d];
      rem /= x->shape[d];
      off += idx * (x->strides ? x->strides[d] : 1);
    }
    o->data[i] = (float)(s->factor * xd[off]);
  }
  memset(&o->managed, 0, sizeof(o->managed));
  memcpy(o->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  o->managed.dl_tensor.data = o->data;
  o->managed.dl_tensor.device.device_type = kDLCPU;
  o->managed.dl_tensor.ndim = x->ndim;
  o->managed.dl_tensor.dtype = x->dtype;
  o->managed.dl_tensor.shape = o->shape;
  o->managed.dl_tensor.strides = NULL; /* compact row-major */
  o->managed.manager_ctx = o;
  o->managed.deleter = owned_deleter;
  src->deleter(src);

  tsr_tensor* y = NULL;
  st = h->tensor_from_dlpack(h->ctx, &o->managed, &y); /* consumes o, also on error */
  if (st != TSR_OK) return st;
  st = h->set_put(batch, s->output, y);
  h->tensor_release(y);
  return st;
}

static const tsr_encoder_vtable vtable = {sizeof(tsr_encoder_vtable), parameters, NULL, forward, NULL, NULL};
static const tsr_config_key keys[] = {
    {sizeof(tsr_config_key), "factor", TSR_CONFIG_FLOAT, "2.0", "multiplier", 1.0, 0.0, NULL},
    {sizeof(tsr_config_key), "input", TSR_CONFIG_STRING, "\"x\"", "tensor to read", 1.0, 0.0, NULL},
    {sizeof(tsr_config_key), "output", TSR_CONFIG_STRING, "\"y\"", "tensor to write", 1.0, 0.0, NULL},
};
static const tsr_plugin_descriptor descriptor = {
    sizeof(tsr_plugin_descriptor), TSR_ABI_MAJOR, TSR_ABI_MINOR, "c_scale", "1.0.0", TSR_KIND_ENCODER,
    "Multiplies a float32 tensor by a constant, in plain C through DLPack.", NULL, keys, 3, create, destroy, &vtable};

TSR_EXPORT const tsr_plugin_descriptor* tessera_plugin_entry(void) { return &descriptor; }

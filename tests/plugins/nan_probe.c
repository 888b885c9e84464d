/* tests/plugins/nan_probe.c — a loss reducer in plain C that reports a NaN loss on every
 * `every`-th call (zero gradient otherwise), to test the trainer's non-finite handling. */
#include <dlpack/dlpack.h>
#include <tessera/abi.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct probe {
  const tsr_host* host;
  const char* logits;
  int64_t every;
  int64_t calls;
} probe;

typedef struct zeros {
  DLManagedTensor managed;
  int64_t shape[2];
  float data[];
} zeros;

static void zeros_deleter(DLManagedTensor* self) { free(self->manager_ctx); }

static tsr_status create(const tsr_host* host, const tsr_config* cfg, tsr_instance** out) {
  probe* p = (probe*)calloc(1, sizeof(probe));
  if (!p) return TSR_ERR_OUT_OF_MEMORY;
  p->host = host;
  if (host->config_get_string(cfg, "logits", &p->logits) != TSR_OK || host->config_get_int(cfg, "every", &p->every) != TSR_OK) {
    free(p);
    return TSR_ERR_INVALID_ARGUMENT;
  }
  *out = (tsr_instance*)p;
  return TSR_OK;
}
static void destroy(tsr_instance* self) { free(self); }

static tsr_status compute(tsr_instance* self, const tsr_tensor_set* batch, tsr_term_sink* sink) {
  probe* p = (probe*)self;
  const tsr_host* h = p->host;
  tsr_tensor* logits = h->set_get(batch, p->logits);
  if (!logits || h->tensor_ndim(logits) != 2) {
    h->set_error(h->ctx, "nan_probe: needs a 2-D logits tensor");
    return TSR_ERR_NOT_FOUND;
  }
  int64_t rows = h->tensor_size(logits, 0), cols = h->tensor_size(logits, 1);
  zeros* z = (zeros*)calloc(1, sizeof(zeros) + (size_t)(rows * cols) * sizeof(float));
  if (!z) return TSR_ERR_OUT_OF_MEMORY;
  z->shape[0] = rows;
  z->shape[1] = cols;
  z->managed.dl_tensor.data = z->data;
  z->managed.dl_tensor.device.device_type = kDLCPU;
  z->managed.dl_tensor.ndim = 2;
  z->managed.dl_tensor.dtype.code = kDLFloat;
  z->managed.dl_tensor.dtype.bits = 32;
  z->managed.dl_tensor.dtype.lanes = 1;
  z->managed.dl_tensor.shape = z->shape;
  z->managed.manager_ctx = z;
  z->managed.deleter = zeros_deleter;
  tsr_tensor* grad = NULL;
  tsr_status st = h->tensor_from_dlpack(h->ctx, &z->managed, &grad);
  if (st != TSR_OK) return st;
  p->calls += 1;
  tsr_term term;
  memset(&term, 0, sizeof term);
  term.struct_size = sizeof term;
  term.name = "nan_probe";
  term.tensor = logits;
  term.grad = grad;
  term.weight = 1.0;
  term.has_value = 1;
  term.value = (p->calls % p->every == 0) ? (double)NAN : 0.0;
  st = h->emit_term(sink, &term);
  h->tensor_release(grad);
  return st;
}

static const tsr_loss_vtable vtable = {sizeof(tsr_loss_vtable), compute, NULL, NULL};
static const tsr_config_key keys[] = {
    {sizeof(tsr_config_key), "logits", TSR_CONFIG_STRING, "\"logits\"", "tensor whose shape the gradient takes", 1.0, 0.0, NULL},
    {sizeof(tsr_config_key), "every", TSR_CONFIG_INT, "3", "report NaN on every n-th call", 1.0, 1e9, NULL},
};
static const tsr_plugin_descriptor descriptor = {
    sizeof(tsr_plugin_descriptor), TSR_ABI_MAJOR, TSR_ABI_MINOR, "nan_probe", "1.0.0", TSR_KIND_LOSS,
    "Test plugin: a NaN loss on every n-th call.", NULL, keys, 2, create, destroy, &vtable};

TSR_EXPORT const tsr_plugin_descriptor* tessera_plugin_entry(void) { return &descriptor; }

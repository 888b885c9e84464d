/* tests/plugins/v1_0_fp32.c — a precision backend in plain C built against the FROZEN ABI 1.0
 * header (tests/abi/v1_0): fp32 AdamW / SGD, four 1.0-layout (56-byte) config keys. */
#include <tessera/abi.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if TSR_ABI_MINOR != 0
#error "v1_0_fp32.c must be compiled against the frozen ABI 1.0 header (tests/abi/v1_0 first on the include path)"
#endif

#define MAX_SHARDS 8

typedef struct shard_states {
  char name[64];
  tsr_tensor* exp_avg;    /* (numel,) f32; SGD's momentum buffer too */
  tsr_tensor* exp_avg_sq; /* (numel,) f32 */
} shard_states;

typedef struct backend {
  const tsr_host* host;
  double lr_scale;
  double scale; /* constant loss scale */
  shard_states shards[MAX_SHARDS];
  int num_shards;
} backend;

static tsr_status fail(const backend* b, tsr_status s, const char* msg) {
  b->host->set_error(b->host->ctx, msg);
  return s;
}

static tsr_status create(const tsr_host* host, const tsr_config* cfg, tsr_instance** out) {
  backend* b = (backend*)calloc(1, sizeof(backend));
  const char* tag = NULL;
  int32_t verbose = 0;
  if (!b) return TSR_ERR_OUT_OF_MEMORY;
  b->host = host;
  if (host->config_get_float(cfg, "lr_scale", &b->lr_scale) != TSR_OK ||
      host->config_get_float(cfg, "loss_scale", &b->scale) != TSR_OK ||
      host->config_get_string(cfg, "tag", &tag) != TSR_OK || host->config_get_bool(cfg, "verbose", &verbose) != TSR_OK) {
    free(b);
    return TSR_ERR_INVALID_ARGUMENT;
  }
  if (verbose) {
    char msg[128];
    snprintf(msg, sizeof msg, "ABI 1.0 fp32 backend '%s', lr x %g", tag, b->lr_scale);
    host->log(host->ctx, TSR_LOG_INFO, msg);
  }
  *out = (tsr_instance*)b;
  return TSR_OK;
}

static void destroy(tsr_instance* self) {
  backend* b = (backend*)self;
  int i;
  for (i = 0; i < b->num_shards; ++i) {
    b->host->tensor_release(b->shards[i].exp_avg);
    b->host->tensor_release(b->shards[i].exp_avg_sq);
  }
  free(b);
}

static tsr_status describe(tsr_instance* self, tsr_precision_info* out) {
  (void)self;
  out->param_dtype = TSR_DTYPE_F32;
  out->grad_dtype = TSR_DTYPE_F32;
  out->master_policy = TSR_MASTER_NONE;
  out->state_dtype = TSR_DTYPE_F32;
  out->autocast_dtype = TSR_DTYPE_NONE;
  return TSR_OK;
}

static tsr_status init_shard(tsr_instance* self, const tsr_flat_shard* shard) {
  backend* b = (backend*)self;
  const tsr_host* h = b->host;
  char name[96];
  shard_states* s;
  tsr_status st;
  if (b->num_shards == MAX_SHARDS) return fail(b, TSR_ERR_UNSUPPORTED, "v1_0_fp32: too many shards");
  if (shard->param_dtype != TSR_DTYPE_F32) return fail(b, TSR_ERR_TYPE, "v1_0_fp32: parameters must be fp32");
  s = &b->shards[b->num_shards];
  snprintf(s->name, sizeof s->name, "%s", shard->name);
  snprintf(name, sizeof name, "%s.exp_avg", shard->name);
  st = h->alloc_state(h->ctx, name, TSR_STATE_OPTIMIZER, TSR_DTYPE_F32, shard->numel, &s->exp_avg);
  if (st != TSR_OK) return st;
  snprintf(name, sizeof name, "%s.exp_avg_sq", shard->name);
  st = h->alloc_state(h->ctx, name, TSR_STATE_OPTIMIZER, TSR_DTYPE_F32, shard->numel, &s->exp_avg_sq);
  if (st != TSR_OK) return st;
  ++b->num_shards;
  return TSR_OK;
}

static tsr_status step(tsr_instance* self, const tsr_flat_shard* shard, const tsr_optim_step* opt) {
  backend* b = (backend*)self;
  const tsr_host* h = b->host;
  shard_states* s = NULL;
  float *p, *g, *m, *v;
  int64_t i;
  int k;
  const double lr = opt->lr * b->lr_scale;
  for (k = 0; k < b->num_shards; ++k)
    if (strcmp(b->shards[k].name, shard->name) == 0) s = &b->shards[k];
  if (!s) return fail(b, TSR_ERR_INVALID_ARGUMENT, "v1_0_fp32: step on a shard init_shard never saw");
  p = (float*)h->tensor_data(shard->params);
  g = (float*)h->tensor_data(shard->grads);
  m = (float*)h->tensor_data(s->exp_avg);
  v = (float*)h->tensor_data(s->exp_avg_sq);
  if (!p || !g || !m || !v) return fail(b, TSR_ERR_UNSUPPORTED, "v1_0_fp32: needs contiguous CPU tensors");
  if (opt->algorithm == TSR_OPTIM_SGD) {
    for (i = 0; i < shard->numel; ++i) {
      double gi = g[i] * opt->grad_scale + opt->weight_decay * p[i];
      if (opt->momentum != 0) {
        m[i] = (float)(opt->momentum * m[i] + gi);
        gi = opt->nesterov ? gi + opt->momentum * m[i] : m[i];
      }
      p[i] = (float)(p[i] - lr * gi);
    }
  } else if (opt->algorithm == TSR_OPTIM_ADAMW) {
    const double c1 = 1.0 - pow(opt->beta1, (double)opt->step), c2 = 1.0 - pow(opt->beta2, (double)opt->step);
    for (i = 0; i < shard->numel; ++i) {
      const double gi = g[i] * opt->grad_scale;
      m[i] = (float)(opt->beta1 * m[i] + (1.0 - opt->beta1) * gi);
      v[i] = (float)(opt->beta2 * v[i] + (1.0 - opt->beta2) * gi * gi);
      p[i] = (float)(p[i] * (1.0 - lr * opt->weight_decay) - lr * (m[i] / c1) / (sqrt(v[i] / c2) + opt->eps));
    }
  } else {
    return fail(b, TSR_ERR_UNSUPPORTED, "v1_0_fp32: only AdamW and SGD");
  }
  return TSR_OK;
}

static tsr_status loss_scale(tsr_instance* self, double* out) {
  *out = ((backend*)self)->scale;
  return TSR_OK;
}

static tsr_status find_overflow(tsr_instance* self, const tsr_flat_shard* shard, int32_t* found_inf) {
  const float* g = (const float*)((backend*)self)->host->tensor_data(shard->grads);
  int64_t i;
  for (i = 0; g && i < shard->numel; ++i)
    if (!isfinite(g[i])) {
      *found_inf = 1;
      return TSR_OK;
    }
  return TSR_OK;
}

static tsr_status update_scale(tsr_instance* self, int32_t found_inf, int32_t* skip_step) {
  (void)self;
  *skip_step = found_inf;
  return TSR_OK;
}

/* The 1.0 table: 56 bytes, ends with update_scale. */
static const tsr_precision_vtable vtable = {sizeof(tsr_precision_vtable), describe, init_shard, step,
                                            loss_scale, find_overflow, update_scale};

/* 1.0 keys: 56 bytes each, no allowed_values. */
static const tsr_config_key keys[] = {
    {sizeof(tsr_config_key), "lr_scale", TSR_CONFIG_FLOAT, "1.0", "multiplies the learning rate", 0.0, 10.0},
    {sizeof(tsr_config_key), "tag", TSR_CONFIG_STRING, "\"v1\"", "a name for the log", 1.0, 0.0},
    {sizeof(tsr_config_key), "loss_scale", TSR_CONFIG_FLOAT, "1.0", "constant loss scale", 1.0, 65536.0},
    {sizeof(tsr_config_key), "verbose", TSR_CONFIG_BOOL, "false", "log the settings at create", 1.0, 0.0},
};

static const tsr_plugin_descriptor descriptor = {
    sizeof(tsr_plugin_descriptor), TSR_ABI_MAJOR, TSR_ABI_MINOR, "v1_0_fp32", "1.0.0", TSR_KIND_PRECISION,
    "fp32 AdamW/SGD in plain C, built against the ABI 1.0 header (compatibility test).", NULL, keys, 4, create,
    destroy, &vtable};

TSR_EXPORT const tsr_plugin_descriptor* tessera_plugin_entry(void) { return &descriptor; }

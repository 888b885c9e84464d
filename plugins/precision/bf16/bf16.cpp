// plugins/precision/bf16/bf16.cpp — precision backend "bf16": bf16 parameters and gradients
// for compute (autocast bf16), an fp32 master copy and fp32 moments (16 bytes/param, AdamW).
#include "../common/flat_backend.hpp"

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_bool("autocast", "true", "run the forward pass under bf16 autocast"),
};

class Bf16 : public tessera::precision::FlatBackend {
 public:
  explicit Bf16(const tessera::sdk::Host& host) : FlatBackend(host), autocast_(host.get_bool("autocast")) {}

  tsr_precision_info describe() override {
    return {sizeof(tsr_precision_info), TSR_DTYPE_BF16, TSR_DTYPE_BF16, TSR_MASTER_FP32, TSR_DTYPE_F32,
            autocast_ ? TSR_DTYPE_BF16 : TSR_DTYPE_NONE};
  }
  void init_shard(const tsr_flat_shard& shard) override {
    expect(shard, TSR_DTYPE_BF16, TSR_DTYPE_BF16, "bf16");
    float* master = alloc<float>(shard, "master", TSR_STATE_MASTER, TSR_DTYPE_F32);
    tessera::kernels::convert_bf16_to_f32(params<uint16_t>(shard), master, shard.numel);
    alloc<float>(shard, "exp_avg", TSR_STATE_OPTIMIZER, TSR_DTYPE_F32);
    alloc<float>(shard, "exp_avg_sq", TSR_STATE_OPTIMIZER, TSR_DTYPE_F32);
  }
  void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    auto* p = params<uint16_t>(shard);
    const auto* g = grads<uint16_t>(shard);
    auto* master = state<float>(shard, "master");
    auto* m = state<float>(shard, "exp_avg");
    if (opt.algorithm == TSR_OPTIM_ADAMW)
      tessera::kernels::adamw_bf16_master_f32(p, g, master, m, state<float>(shard, "exp_avg_sq"), shard.numel,
                                              adamw_args(opt));
    else if (opt.algorithm == TSR_OPTIM_SGD)
      tessera::kernels::sgd_bf16_master_f32(p, g, master, m, shard.numel, sgd_args(opt));
    else
      unsupported(opt, "bf16");
  }

 private:
  bool autocast_;
};

}  // namespace

TESSERA_PLUGIN(Bf16, tessera::sdk::Precision, "bf16", "1.0.0",
               "bf16 parameters and gradients for compute, fp32 master weights and fp32 optimizer moments "
               "(AdamW: 2 + 2 + 4 + 8 = 16 bytes/parameter).",
               kKeys)

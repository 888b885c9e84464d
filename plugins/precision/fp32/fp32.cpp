// plugins/precision/fp32/fp32.cpp — precision backend "fp32": fp32 parameters, gradients and
// optimizer states, no master copy; updates its flat shard with the kernels/ CPU loops.
#include "../common/flat_backend.hpp"

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_bool("check_finite_grads", "false",
                           "refuse a step whose gradients contain NaN/Inf (costs one pass over the gradients)"),
};

class Fp32 : public tessera::precision::FlatBackend {
 public:
  explicit Fp32(const tessera::sdk::Host& host) : FlatBackend(host), check_finite_(host.get_bool("check_finite_grads")) {}

  tsr_precision_info describe() override {
    return {sizeof(tsr_precision_info), TSR_DTYPE_F32, TSR_DTYPE_F32, TSR_MASTER_NONE, TSR_DTYPE_F32, TSR_DTYPE_NONE};
  }
  void init_shard(const tsr_flat_shard& shard) override {
    expect(shard, TSR_DTYPE_F32, TSR_DTYPE_F32, "fp32");
    alloc<float>(shard, "exp_avg", TSR_STATE_OPTIMIZER, TSR_DTYPE_F32);
    alloc<float>(shard, "exp_avg_sq", TSR_STATE_OPTIMIZER, TSR_DTYPE_F32);
  }
  void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    auto* p = params<float>(shard);
    const auto* g = grads<float>(shard);
    if (check_finite_ && !tessera::kernels::all_finite_f32(g, shard.numel))
      throw tessera::sdk::Error(TSR_ERR_RUNTIME, "non-finite gradient in shard '" + std::string(shard.name) + "'");
    auto* m = state<float>(shard, "exp_avg");
    if (opt.algorithm == TSR_OPTIM_ADAMW)
      tessera::kernels::adamw_f32(p, g, m, state<float>(shard, "exp_avg_sq"), shard.numel, adamw_args(opt));
    else if (opt.algorithm == TSR_OPTIM_SGD)
      tessera::kernels::sgd_f32(p, g, m, shard.numel, sgd_args(opt));  // exp_avg doubles as the momentum buffer
    else
      unsupported(opt, "fp32");
  }

 private:
  bool check_finite_;
};

}  // namespace

TESSERA_PLUGIN(Fp32, tessera::sdk::Precision, "fp32", "1.0.0",
               "Full fp32: parameters, gradients and optimizer moments in fp32, no master copy "
               "(AdamW: 16 bytes/parameter).",
               kKeys)

// plugins/precision/fp32/fp32.cpp — precision backend "fp32": fp32 parameters, gradients and
// optimizer states, no master copy; updates its flat shard with the kernels/ CPU or CUDA loops.
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
    namespace k = tessera::kernels;
    auto* p = params<float>(shard);
    const auto* g = grads<float>(shard);
    const int64_t n = shard.numel;
    if (check_finite_ && !on_device(shard, "fp32", [&] { return k::all_finite_f32(g, n); },
                                    [&](auto stream) { return k::cuda::all_finite_f32(g, n, stream); }))
      throw tessera::sdk::Error(TSR_ERR_RUNTIME, "non-finite gradient in shard '" + std::string(shard.name) + "'");
    auto* m = state<float>(shard, "exp_avg");
    if (opt.algorithm == TSR_OPTIM_ADAMW) {
      auto* v = state<float>(shard, "exp_avg_sq");
      const k::AdamWArgs a = adamw_args(opt);
      on_device(shard, "fp32", [&] { k::adamw_f32(p, g, m, v, n, a); },
                [&](auto stream) { k::cuda::adamw_f32(p, g, m, v, n, a, stream); });
    } else if (opt.algorithm == TSR_OPTIM_SGD) {
      const k::SgdArgs a = sgd_args(opt);  // exp_avg doubles as the momentum buffer
      on_device(shard, "fp32", [&] { k::sgd_f32(p, g, m, n, a); },
                [&](auto stream) { k::cuda::sgd_f32(p, g, m, n, a, stream); });
    } else {
      unsupported(opt, "fp32");
    }
  }

 private:
  bool check_finite_;
};

}  // namespace

TESSERA_PLUGIN(Fp32, tessera::sdk::Precision, "fp32", "1.0.0",
               "Full fp32: parameters, gradients and optimizer moments in fp32, no master copy "
               "(AdamW: 16 bytes/parameter).",
               kKeys)

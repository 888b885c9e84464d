// plugins/precision/bf16_remainder/bf16_remainder.cpp — precision backend "bf16_remainder":
// bf16 parameters plus a 16-bit remainder that together are the exact fp32 master (14 B/param).
#include "../common/flat_backend.hpp"

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_bool("autocast", "true", "run the forward pass under bf16 autocast"),
};

class Bf16Remainder : public tessera::precision::FlatBackend {
 public:
  explicit Bf16Remainder(const tessera::sdk::Host& host) : FlatBackend(host), autocast_(host.get_bool("autocast")) {}

  tsr_precision_info describe() override {
    return {sizeof(tsr_precision_info), TSR_DTYPE_BF16, TSR_DTYPE_BF16, TSR_MASTER_REMAINDER16, TSR_DTYPE_F32,
            autocast_ ? TSR_DTYPE_BF16 : TSR_DTYPE_NONE};
  }
  void init_shard(const tsr_flat_shard& shard) override {
    expect(shard, TSR_DTYPE_BF16, TSR_DTYPE_BF16, "bf16_remainder");
    // The parameters are already bf16, so the exact master starts with a zero remainder.
    alloc<int16_t>(shard, "remainder", TSR_STATE_MASTER, TSR_DTYPE_I16);
    alloc<float>(shard, "exp_avg", TSR_STATE_OPTIMIZER, TSR_DTYPE_F32);
    alloc<float>(shard, "exp_avg_sq", TSR_STATE_OPTIMIZER, TSR_DTYPE_F32);
  }
  void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    namespace k = tessera::kernels;
    auto* p = params<uint16_t>(shard);
    const auto* g = grads<uint16_t>(shard);
    auto* rem = state<int16_t>(shard, "remainder");
    auto* m = state<float>(shard, "exp_avg");
    const int64_t n = shard.numel;
    if (opt.algorithm == TSR_OPTIM_ADAMW) {
      auto* v = state<float>(shard, "exp_avg_sq");
      const k::AdamWArgs a = adamw_args(opt);
      on_device(shard, "bf16_remainder", [&] { k::adamw_bf16_remainder(p, rem, g, m, v, n, a); },
                [&](auto stream) { k::cuda::adamw_bf16_remainder(p, rem, g, m, v, n, a, stream); });
    } else if (opt.algorithm == TSR_OPTIM_SGD) {
      const k::SgdArgs a = sgd_args(opt);  // exp_avg doubles as the momentum buffer
      on_device(shard, "bf16_remainder", [&] { k::sgd_bf16_remainder(p, rem, g, m, n, a); },
                [&](auto stream) { k::cuda::sgd_bf16_remainder(p, rem, g, m, n, a, stream); });
    } else {
      unsupported(opt, "bf16_remainder");
    }
  }

 private:
  bool autocast_;
};

}  // namespace

TESSERA_PLUGIN(Bf16Remainder, tessera::sdk::Precision, "bf16_remainder", "1.0.0",
               "bf16 parameters plus a 16-bit remainder forming the exact fp32 master (fp32-master numerics, updates "
               "bitwise equal to bf16's), fp32 moments (AdamW: 2 + 2 + 2 + 8 = 14 bytes/parameter).",
               kKeys)

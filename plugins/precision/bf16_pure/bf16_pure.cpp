// plugins/precision/bf16_pure/bf16_pure.cpp — precision backend "bf16_pure": parameters,
// gradients and AdamW moments (or the SGD momentum) all bf16, no master copy (8 B/param);
// stochastic rounding option.
#include "../common/flat_backend.hpp"

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_bool("stochastic_rounding", "true",
                           "round each updated parameter to bf16 stochastically (unbiased), so updates smaller than "
                           "bf16's resolution are not lost; false = round to nearest even"),
    tessera::sdk::key_int("rounding_seed", "0", "seed of the counter-based rounding noise (reproducible)", 0, 9.2e18),
    tessera::sdk::key_bool("autocast", "true", "run the forward pass under bf16 autocast"),
};

class Bf16Pure : public tessera::precision::FlatBackend {
 public:
  explicit Bf16Pure(const tessera::sdk::Host& host)
      : FlatBackend(host), stochastic_(host.get_bool("stochastic_rounding")),
        seed_(static_cast<uint64_t>(host.get_int("rounding_seed"))), autocast_(host.get_bool("autocast")) {}

  tsr_precision_info describe() override {
    return {sizeof(tsr_precision_info), TSR_DTYPE_BF16, TSR_DTYPE_BF16, TSR_MASTER_NONE, TSR_DTYPE_BF16,
            autocast_ ? TSR_DTYPE_BF16 : TSR_DTYPE_NONE};
  }
  void init_shard(const tsr_flat_shard& shard) override {
    expect(shard, TSR_DTYPE_BF16, TSR_DTYPE_BF16, "bf16_pure");
    alloc<uint16_t>(shard, "exp_avg", TSR_STATE_OPTIMIZER, TSR_DTYPE_BF16);
    alloc<uint16_t>(shard, "exp_avg_sq", TSR_STATE_OPTIMIZER, TSR_DTYPE_BF16);
  }
  void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    // A distinct rounding counter for every (step, element of the whole model).
    // Same seed and counters on either device, so CPU and CUDA runs round identically.
    const uint64_t counter_base = (static_cast<uint64_t>(opt.step) << 40) + static_cast<uint64_t>(shard.offset);
    namespace k = tessera::kernels;
    auto* p = params<uint16_t>(shard);
    const auto* g = grads<uint16_t>(shard);
    auto* m = state<uint16_t>(shard, "exp_avg");
    const int64_t n = shard.numel;
    if (opt.algorithm == TSR_OPTIM_SGD) {  // exp_avg doubles as the momentum buffer
      const k::SgdArgs a = sgd_args(opt);
      on_device(shard, "bf16_pure", [&] { k::sgd_bf16_pure(p, g, m, n, a, stochastic_, seed_, counter_base); },
                [&](auto stream) { k::cuda::sgd_bf16_pure(p, g, m, n, a, stochastic_, seed_, counter_base, stream); });
      return;
    }
    if (opt.algorithm != TSR_OPTIM_ADAMW) unsupported(opt, "bf16_pure");
    auto* v = state<uint16_t>(shard, "exp_avg_sq");
    const k::AdamWArgs a = adamw_args(opt);
    on_device(shard, "bf16_pure", [&] { k::adamw_bf16_pure(p, g, m, v, n, a, stochastic_, seed_, counter_base); },
              [&](auto stream) { k::cuda::adamw_bf16_pure(p, g, m, v, n, a, stochastic_, seed_, counter_base, stream); });
  }

 private:
  bool stochastic_;
  uint64_t seed_;
  bool autocast_;
};

}  // namespace

TESSERA_PLUGIN(Bf16Pure, tessera::sdk::Precision, "bf16_pure", "1.0.0",
               "Pure bf16: parameters, gradients and AdamW moments (or SGD momentum) in bf16, no master copy "
               "(2 + 2 + 4 = 8 bytes/parameter with AdamW); the updated parameters are rounded stochastically by default.",
               kKeys)

// plugins/precision/bf16_pure/bf16_pure.cpp — precision backend "bf16_pure": parameters,
// gradients and optimizer states all bf16, no master copy (AdamW 8 B/param, SGD 6); stochastic rounding.
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
      : FlatBackend(host, tessera::precision::kBf16PureLayout, host.get_bool("autocast") ? TSR_DTYPE_BF16 : TSR_DTYPE_NONE),
        stochastic_(host.get_bool("stochastic_rounding")), seed_(static_cast<uint64_t>(host.get_int("rounding_seed"))) {}

 protected:
  // A distinct rounding counter for every (step, element of the whole model); the same seed and
  // counters on either device, so CPU and CUDA runs round identically.
  void rounding(const tsr_flat_shard& shard, const tsr_optim_step& opt, tessera::kernels::UpdateBuffers& b) override {
    b.stochastic = stochastic_;
    b.seed = seed_;
    b.counter_base = (static_cast<uint64_t>(opt.step) << 40) + static_cast<uint64_t>(shard.offset);
  }

 private:
  bool stochastic_;
  uint64_t seed_;
};

}  // namespace

TESSERA_PLUGIN(Bf16Pure, tessera::sdk::Precision, "bf16_pure", "1.1.0",
               "Pure bf16: parameters, gradients and optimizer states in bf16, no master copy "
               "(AdamW: 2 + 2 + 4 = 8 bytes/parameter; SGD with momentum or Lion 6); the updated parameters are "
               "rounded stochastically by default.",
               kKeys)

// plugins/precision/bf16/bf16.cpp — precision backend "bf16": bf16 parameters and gradients
// for compute (autocast bf16), an fp32 master copy and fp32 states; storage Bf16MasterF32.
#include "../common/flat_backend.hpp"

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_bool("autocast", "true", "run the forward pass under bf16 autocast"),
};

class Bf16 : public tessera::precision::FlatBackend {
 public:
  explicit Bf16(const tessera::sdk::Host& host)
      : FlatBackend(host, tessera::precision::kBf16Layout, host.get_bool("autocast") ? TSR_DTYPE_BF16 : TSR_DTYPE_NONE) {}
};

}  // namespace

TESSERA_PLUGIN(Bf16, tessera::sdk::Precision, "bf16", "1.1.0",
               "bf16 parameters and gradients for compute, fp32 master weights and fp32 optimizer states "
               "(AdamW: 2 + 2 + 4 + 8 = 16 bytes/parameter; SGD with momentum or Lion 12).",
               kKeys)

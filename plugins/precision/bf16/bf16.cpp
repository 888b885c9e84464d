// plugins/precision/bf16/bf16.cpp — precision backend "bf16": bf16 parameters and gradients
// for compute (autocast bf16), an fp32 master copy and fp32 moments (16 bytes/param, AdamW).
#include "../common/flat_backend.hpp"

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_bool("autocast", "true", "run the forward pass under bf16 autocast"),
};

class Bf16 : public tessera::precision::MasterF32Backend<tessera::precision::Bf16Traits> {
 public:
  explicit Bf16(const tessera::sdk::Host& host) : MasterF32Backend(host, host.get_bool("autocast")) {}
};

}  // namespace

TESSERA_PLUGIN(Bf16, tessera::sdk::Precision, "bf16", "1.0.0",
               "bf16 parameters and gradients for compute, fp32 master weights and fp32 optimizer moments "
               "(AdamW: 2 + 2 + 4 + 8 = 16 bytes/parameter).",
               kKeys)

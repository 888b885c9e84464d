// plugins/precision/bf16_remainder/bf16_remainder.cpp — precision backend "bf16_remainder":
// bf16 parameters plus a 16-bit remainder that together are the exact fp32 master (14 B/param).
#include "../common/flat_backend.hpp"

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_bool("autocast", "true", "run the forward pass under bf16 autocast"),
};

// The parameters are already bf16 when a shard starts, so its exact master has a zero remainder.
class Bf16Remainder : public tessera::precision::FlatBackend {
 public:
  explicit Bf16Remainder(const tessera::sdk::Host& host)
      : FlatBackend(host, tessera::precision::kBf16RemainderLayout,
                    host.get_bool("autocast") ? TSR_DTYPE_BF16 : TSR_DTYPE_NONE) {}
};

}  // namespace

TESSERA_PLUGIN(Bf16Remainder, tessera::sdk::Precision, "bf16_remainder", "1.1.0",
               "bf16 parameters plus a 16-bit remainder forming the exact fp32 master (fp32-master numerics, updates "
               "bitwise equal to bf16's), fp32 states (AdamW: 2 + 2 + 2 + 8 = 14 bytes/parameter; SGD with momentum "
               "or Lion 10).",
               kKeys)

// tests/plugins/open_bounds.cpp — number keys bounded on one side only (kNoMin / kNoMax), and
// one key without bounds at all: what the SDK's bound constants declare.
#include <tessera/plugin.hpp>

namespace sdk = tessera::sdk;

namespace {
const tsr_config_key kKeys[] = {
    sdk::key_int("depth", "3", "at least 1, no upper bound", 1, sdk::kNoMax),
    sdk::key_float("shift", "0.0", "at most 10, no lower bound", sdk::kNoMin, 10.0),
    sdk::key_float("any", "0.0", "no bounds"),
};
class Identity final : public sdk::Encoder {
 public:
  explicit Identity(const sdk::Host&) {}
  sdk::Params parameters() override { return {}; }
  void forward(sdk::TensorSet&) override {}
};
}  // namespace

TESSERA_PLUGIN(Identity, sdk::Encoder, "open_bounds", "0.1.0", "keys bounded on one side", kKeys)

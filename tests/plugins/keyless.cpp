// tests/plugins/keyless.cpp — a plugin without config keys: TESSERA_PLUGIN_NO_KEYS needs no array.
// y = x + offset, offset a (1,) parameter starting at 0.
#include <tessera/plugin.hpp>

namespace sdk = tessera::sdk;

namespace {
class Shift final : public sdk::Encoder {
 public:
  explicit Shift(const sdk::Host&) : offset_(at::zeros({1}).set_requires_grad(true)) {}
  sdk::Params parameters() override { return {{"offset", offset_}}; }
  void forward(sdk::TensorSet& batch) override { batch.put("image", batch.get("image") + offset_); }

 private:
  at::Tensor offset_;  // (1,) f32
};
}  // namespace

TESSERA_PLUGIN_NO_KEYS(Shift, sdk::Encoder, "keyless", "0.1.0", "y = x + offset; takes no config keys")

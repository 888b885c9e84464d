// example_affine.cpp — a third party's encoder: y = scale * x + shift with
// two learnable scalars. Built against the installed SDK only; CI builds, lists and trains it.
#include <tessera/plugin.hpp>

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_string("input", "\"image\"", "batch tensor to read"),
    tessera::sdk::key_string("output", "\"image\"", "batch tensor to write (may be the input's name)"),
    tessera::sdk::key_float("init_scale", "1.0", "initial value of the scale"),
};

class Affine : public tessera::sdk::Encoder {
 public:
  explicit Affine(const tessera::sdk::Host& host)
      : input_(host.get_string("input")), output_(host.get_string("output")),
        scale_(at::full({1}, host.get_float("init_scale")).set_requires_grad(true)),
        shift_(at::zeros({1}).set_requires_grad(true)) {}
  tessera::sdk::Params parameters() override { return {{"scale", scale_}, {"shift", shift_}}; }
  void forward(tessera::sdk::TensorSet& batch) override {
    batch.put(output_, batch.get(input_) * scale_ + shift_);
  }

 private:
  std::string input_, output_;
  at::Tensor scale_;  // (1,) f32
  at::Tensor shift_;  // (1,) f32
};

}  // namespace

TESSERA_PLUGIN(Affine, tessera::sdk::Encoder, "example_affine", "0.1.0",
               "Learnable elementwise affine map y = scale * x + shift (out-of-tree example).", kKeys)

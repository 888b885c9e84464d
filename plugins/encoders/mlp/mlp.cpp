// plugins/encoders/mlp/mlp.cpp — encoder plugin "mlp": flattens a named input and applies
// Linear+ReLU hidden layers and a final Linear, writing a named output.
#include <tessera/plugin.hpp>

#include <cmath>

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_string("input", "\"image\"", "batch tensor to read; flattened to (B, in_features)"),
    tessera::sdk::key_string("output", "\"logits\"", "batch tensor to write, (B, out_features)"),
    tessera::sdk::key_int("in_features", "784", "size of the flattened input", 1, 1 << 24),
    tessera::sdk::key_int("hidden_features", "256", "width of each hidden layer", 1, 1 << 20),
    tessera::sdk::key_int("hidden_layers", "1", "number of hidden Linear+ReLU layers", 0, 64),
    tessera::sdk::key_int("out_features", "10", "size of the output", 1, 1 << 24),
    tessera::sdk::key_float("dropout", "0.0", "dropout probability after each hidden layer", 0.0, 1.0),
};

// Linear layer initialised like torch.nn.Linear (Kaiming-uniform weight, uniform bias).
struct Linear {
  at::Tensor weight;  // (out, in) f32
  at::Tensor bias;    // (out,) f32
  Linear(int64_t in, int64_t out) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    weight = at::empty({out, in}).uniform_(-bound, bound).set_requires_grad(true);
    bias = at::empty({out}).uniform_(-bound, bound).set_requires_grad(true);
  }
  at::Tensor operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }
};

class Mlp : public tessera::sdk::Encoder {
 public:
  explicit Mlp(const tessera::sdk::Host& host)
      : input_(host.get_string("input")), output_(host.get_string("output")), dropout_(host.get_float("dropout")) {
    int64_t width = host.get_int("in_features");
    for (int64_t i = 0; i < host.get_int("hidden_layers"); ++i) {
      layers_.emplace_back(width, host.get_int("hidden_features"));
      width = host.get_int("hidden_features");
    }
    layers_.emplace_back(width, host.get_int("out_features"));
  }

  tessera::sdk::Params parameters() override {
    tessera::sdk::Params p;
    for (size_t i = 0; i < layers_.size(); ++i) {
      p.emplace_back("fc" + std::to_string(i) + ".weight", layers_[i].weight);
      p.emplace_back("fc" + std::to_string(i) + ".bias", layers_[i].bias);
    }
    return p;
  }
  void train(bool training) override { training_ = training; }

  void forward(tessera::sdk::TensorSet& batch) override {
    at::Tensor x = batch.get(input_).flatten(1);  // (B, in_features)
    for (size_t i = 0; i + 1 < layers_.size(); ++i) {
      x = at::relu(layers_[i](x));
      if (dropout_ > 0) x = at::dropout(x, dropout_, training_);
    }
    batch.put(output_, layers_.back()(x));  // (B, out_features)
  }

 private:
  std::string input_, output_;
  double dropout_;
  bool training_ = true;
  std::vector<Linear> layers_;
};

}  // namespace

TESSERA_PLUGIN(Mlp, tessera::sdk::Encoder, "mlp", "1.0.0",
               "Multi-layer perceptron: flatten(input) -> [Linear -> ReLU -> Dropout] x hidden_layers -> Linear.",
               kKeys)

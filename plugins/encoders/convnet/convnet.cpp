// plugins/encoders/convnet/convnet.cpp — encoder plugin "convnet": a small VGG-style image
// encoder (conv-BN-ReLU blocks with max-pooling) that writes a feature vector or logits.
#include <tessera/plugin.hpp>

#include <cmath>

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_string("input", "\"image\"", "batch tensor to read, (B, C, H, W) float"),
    tessera::sdk::key_string("output", "\"logits\"", "batch tensor to write, (B, out_features)"),
    tessera::sdk::key_int("in_channels", "1", "channels of the input image", 1, 4096),
    tessera::sdk::key_int("image_size", "28", "height = width of the input image", 4, 65536),
    tessera::sdk::key_int("channels", "32", "channels of the first block; doubled per block", 1, 4096),
    tessera::sdk::key_int("blocks", "2", "conv blocks, each followed by 2x2 max-pooling", 1, 8),
    tessera::sdk::key_int("hidden_features", "128", "width of the fully connected layer; 0 = none", 0, 1 << 20),
    tessera::sdk::key_int("out_features", "10", "size of the output", 1, 1 << 24),
    tessera::sdk::key_float("dropout", "0.25", "dropout before the last Linear layer", 0.0, 1.0),
    tessera::sdk::key_bool("batch_norm", "true",
                           "BatchNorm after each conv; its batch statistics are each rank's own (no SyncBatchNorm), "
                           "so only without it does a data-parallel run follow the one-rank run"),
};

at::Tensor kaiming_uniform(at::IntArrayRef shape, int64_t fan_in) {
  // torch.nn's default: kaiming_uniform_(a=sqrt(5)) => bound = 1/sqrt(fan_in) * sqrt(3) * sqrt(2/6)
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  return at::empty(shape).uniform_(-bound, bound).set_requires_grad(true);
}

class ConvNet : public tessera::sdk::Encoder {
 public:
  explicit ConvNet(const tessera::sdk::Host& host)
      : input_(host.get_string("input")), output_(host.get_string("output")), dropout_(host.get_float("dropout")),
        batch_norm_(host.get_bool("batch_norm")) {
    int64_t in = host.get_int("in_channels"), ch = host.get_int("channels"), size = host.get_int("image_size");
    for (int64_t b = 0; b < host.get_int("blocks"); ++b) {
      Block blk;
      blk.weight = kaiming_uniform({ch, in, 3, 3}, in * 9);
      blk.bias = kaiming_uniform({ch}, in * 9);
      if (batch_norm_) {  // no random draws: the conv and fc initialisations are the same either way
        blk.bn_weight = at::ones({ch}).set_requires_grad(true);
        blk.bn_bias = at::zeros({ch}).set_requires_grad(true);
        blk.running_mean = at::zeros({ch});
        blk.running_var = at::ones({ch});
      }
      blocks_.push_back(std::move(blk));
      in = ch;
      ch *= 2;
      size /= 2;
    }
    int64_t features = in * size * size;
    const int64_t hidden = host.get_int("hidden_features");
    if (hidden > 0) {
      fc_.push_back({kaiming_uniform({hidden, features}, features), kaiming_uniform({hidden}, features)});
      features = hidden;
    }
    const int64_t out = host.get_int("out_features");
    fc_.push_back({kaiming_uniform({out, features}, features), kaiming_uniform({out}, features)});
  }

  tessera::sdk::Params parameters() override {
    tessera::sdk::Params p;
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const std::string b = "block" + std::to_string(i);
      p.emplace_back(b + ".conv.weight", blocks_[i].weight);
      p.emplace_back(b + ".conv.bias", blocks_[i].bias);
      if (!batch_norm_) continue;
      p.emplace_back(b + ".bn.weight", blocks_[i].bn_weight);
      p.emplace_back(b + ".bn.bias", blocks_[i].bn_bias);
    }
    for (size_t i = 0; i < fc_.size(); ++i) {
      p.emplace_back("fc" + std::to_string(i) + ".weight", fc_[i].weight);
      p.emplace_back("fc" + std::to_string(i) + ".bias", fc_[i].bias);
    }
    return p;
  }
  tessera::sdk::Params buffers() override {
    tessera::sdk::Params b;
    for (size_t i = 0; i < blocks_.size() && batch_norm_; ++i) {
      b.emplace_back("block" + std::to_string(i) + ".bn.running_mean", blocks_[i].running_mean);
      b.emplace_back("block" + std::to_string(i) + ".bn.running_var", blocks_[i].running_var);
    }
    return b;
  }
  void train(bool training) override { training_ = training; }

  void forward(tessera::sdk::TensorSet& batch) override {
    at::Tensor x = batch.get(input_);  // (B, C, H, W)
    for (auto& b : blocks_) {
      x = at::conv2d(x, b.weight, b.bias, 1, 1);
      if (!batch_norm_) {
        x = at::max_pool2d(at::relu(x), 2);
        continue;
      }
      // BatchNorm in fp32 whatever the parameter/autocast dtype (its running statistics are fp32).
      x = at::batch_norm(x.to(at::kFloat), b.bn_weight.to(at::kFloat), b.bn_bias.to(at::kFloat), b.running_mean,
                         b.running_var, training_, 0.1, 1e-5, false);
      x = at::max_pool2d(at::relu(x), 2);
    }
    x = x.flatten(1);  // (B, C' * H' * W')
    for (size_t i = 0; i + 1 < fc_.size(); ++i) x = at::relu(at::linear(x, fc_[i].weight, fc_[i].bias));
    if (dropout_ > 0) x = at::dropout(x, dropout_, training_);
    batch.put(output_, at::linear(x, fc_.back().weight, fc_.back().bias));  // (B, out_features)
  }

 private:
  struct Block {
    at::Tensor weight, bias;              // (C_out, C_in, 3, 3), (C_out,) f32
    at::Tensor bn_weight, bn_bias;        // (C_out,) f32
    at::Tensor running_mean, running_var; // (C_out,) f32 buffers, not trained
  };
  struct Fc {
    at::Tensor weight, bias;  // (out, in), (out,) f32
  };
  std::string input_, output_;
  double dropout_;
  bool batch_norm_;
  bool training_ = true;
  std::vector<Block> blocks_;
  std::vector<Fc> fc_;
};

}  // namespace

TESSERA_PLUGIN(ConvNet, tessera::sdk::Encoder, "convnet", "1.0.0",
               "Small VGG-style image encoder: [conv3x3 -> BatchNorm -> ReLU -> maxpool2] x blocks -> "
               "Linear -> ReLU -> Dropout -> Linear.",
               kKeys)

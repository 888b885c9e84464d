// plugins/encoders/vit/vit.cpp — encoder plugin "vit": a Vision Transformer image encoder (patch
// embedding, class token or mean pooling, bidirectional pre-norm blocks, final norm, Linear head).
#include <tessera/plugin.hpp>

#include "transformer.hpp"

namespace {

namespace sdk = tessera::sdk;
namespace tf = tessera::transformer;

const tsr_config_key kKeys[] = {
    sdk::key_string("input", "\"image\"", "batch tensor to read: (B, C, H, W) float images"),
    sdk::key_string("output", "\"image_emb\"", "batch tensor to write: (B, out_features)"),
    sdk::key_int("in_channels", "1", "channels C of the input images", 1, 4096),
    sdk::key_int("image_size", "28", "height = width of the input images, a multiple of patch_size", 1, 1 << 16),
    sdk::key_int("patch_size", "7", "side of the square patches (Conv2d with kernel = stride = patch_size)", 1,
                 1 << 16),
    sdk::key_enum("pool", "\"cls\"", "cls: the class token's final state; mean: the mean over the patches", "cls|mean"),
    sdk::key_int("out_features", "128", "size of the output embedding", 1, 1 << 20),
    TESSERA_TRANSFORMER_KEYS("128", "4", "4"),
};

class Vit : public sdk::Encoder {
 public:
  explicit Vit(const sdk::Host& host)
      : input_(host.get_string("input")), output_(host.get_string("output")),
        channels_(host.get_int("in_channels")), image_size_(host.get_int("image_size")),
        patch_(host.get_int("patch_size")), cls_pool_(host.get_string("pool") == "cls"),
        cfg_(tf::StackConfig::read(host)) {
    if (image_size_ % patch_ != 0)
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "image_size (" + std::to_string(image_size_) +
                                                     ") must be a multiple of patch_size (" + std::to_string(patch_) + ")");
    const int64_t d = cfg_.d_model, grid = image_size_ / patch_;
    const int64_t tokens = grid * grid + (cls_pool_ ? 1 : 0);
    // In parameter order, so the init draws follow it.
    patch_weight_ = tf::normal_param({d, channels_, patch_, patch_}, cfg_.init_std);
    if (cfg_.bias) patch_bias_ = at::zeros({d}).set_requires_grad(true);
    if (cls_pool_) cls_token_ = tf::normal_param({1, 1, d}, cfg_.init_std);
    if (!cfg_.rotary) pos_embed_ = tf::normal_param({1, tokens, d}, cfg_.init_std);
    h_ = std::make_unique<tf::Stack>(cfg_);
    ln_f_ = tf::Norm(d, cfg_.norm, cfg_.norm_eps, cfg_.bias);
    head_ = tf::Linear(d, host.get_int("out_features"), cfg_.bias, cfg_.init_std);
  }

  sdk::Params parameters() override {
    sdk::Params p{{"patch_embed.weight", patch_weight_}};
    if (patch_bias_.defined()) p.emplace_back("patch_embed.bias", patch_bias_);
    if (cls_token_.defined()) p.emplace_back("cls_token", cls_token_);
    if (pos_embed_.defined()) p.emplace_back("pos_embed", pos_embed_);
    h_->append(p);
    ln_f_.append("ln_f.", p);
    head_.append("head.", p);
    return p;
  }
  void train(bool training) override { training_ = training; }

  void forward(sdk::TensorSet& batch) override {
    const at::Tensor image = batch.get(input_);  // (B, C, H, W) float
    if (image.dim() != 4 || image.size(1) != channels_ || image.size(2) != image_size_ || image.size(3) != image_size_)
      throw sdk::Error(TSR_ERR_TYPE, "'" + input_ + "' must be (B, " + std::to_string(channels_) + ", " +
                                         std::to_string(image_size_) + ", " + std::to_string(image_size_) +
                                         ") images, got " + std::to_string(image.dim()) + " dims");
    // Images come in fp32; parameters may be kept in a 16-bit dtype without autocast.
    const at::Tensor pixels = image.to(patch_weight_.scalar_type());
    at::Tensor x = at::conv2d(pixels, patch_weight_, patch_bias_, patch_).flatten(2).transpose(1, 2);  // (B, N, d)
    if (cls_token_.defined()) x = at::cat({cls_token_.expand({x.size(0), 1, -1}).to(x.scalar_type()), x}, 1);
    if (pos_embed_.defined()) x = x + pos_embed_;
    x = tf::train_dropout(x, cfg_.dropout, training_);
    x = ln_f_(h_->forward(x, tf::AttentionMask{}, training_));                 // (B, N [+ 1], d)
    const at::Tensor pooled = cls_pool_ ? x.select(1, 0) : x.mean(1);        // (B, d)
    batch.put(output_, head_(pooled));                                       // (B, out_features)
  }

 private:
  std::string input_, output_;
  int64_t channels_, image_size_, patch_;
  bool cls_pool_;
  bool training_ = true;
  tf::StackConfig cfg_;
  at::Tensor patch_weight_;  // (d, C, patch, patch)
  at::Tensor patch_bias_;    // (d,); undefined without biases
  at::Tensor cls_token_;     // (1, 1, d); undefined for mean pooling
  at::Tensor pos_embed_;     // (1, N [+ 1 class token], d); undefined for rotary positions
  std::unique_ptr<tf::Stack> h_;  // n_layers bidirectional blocks
  tf::Norm ln_f_;            // (d,) weight [and bias]
  tf::Linear head_;          // (out_features, d) [and (out_features,)]
};

}  // namespace

TESSERA_PLUGIN(Vit, sdk::Encoder, "vit", "1.0.0",
               "Vision Transformer image encoder: patch embedding (Conv2d, kernel = stride = patch_size) -> class "
               "token -> learned positions -> n_layers bidirectional pre-norm blocks -> final norm -> class token "
               "or mean over patches -> Linear to out_features.",
               kKeys)

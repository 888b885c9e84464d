// plugins/losses/clip/clip.cpp — loss reducer "clip": symmetric contrastive (InfoNCE) loss between
// image and text embeddings with a learned temperature; optionally same-label pairs are positives.
#include <tessera/plugin.hpp>

#include <cmath>

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_string("image", "\"image_emb\"", "batch tensor of image embeddings, (B, D) float"),
    tessera::sdk::key_string("text", "\"text_emb\"", "batch tensor of text embeddings, (B, D) float"),
    tessera::sdk::key_string("label", "\"label\"",
                             "batch tensor of class indices (B,); pairs with equal labels are positives "
                             "(soft targets uniform over them); \"\" = only the diagonal"),
    tessera::sdk::key_float("logit_scale_init", "2.659260036932778",
                            "initial log of the inverse temperature (log(1/0.07))", -10.0, 10.0),
    tessera::sdk::key_float("max_logit_scale", "4.605170185988092",
                            "logit_scale is clamped to at most this in the forward (log(100))", -10.0, 10.0),
    tessera::sdk::key_bool("learn_logit_scale", "true", "train logit_scale (a parameter of this loss)"),
    tessera::sdk::key_string("term", "\"clip\"", "name of the emitted term"),
};

at::Tensor l2_normalize(const at::Tensor& x) {  // like torch.nn.functional.normalize(x, dim=1)
  return x / x.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
}

// Mean over rows of the cross-entropy between softmax(logits) and the row-normalised targets.
at::Tensor soft_cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  return -(targets * at::log_softmax(logits, 1)).sum(1).mean();
}

class Clip : public tessera::sdk::Loss {
 public:
  explicit Clip(const tessera::sdk::Host& host)
      : image_(host.get_string("image")), text_(host.get_string("text")), label_(host.get_string("label")),
        term_(host.get_string("term")), max_scale_(host.get_float("max_logit_scale")),
        learn_(host.get_bool("learn_logit_scale")),
        logit_scale_(at::full({}, host.get_float("logit_scale_init"), at::kFloat).set_requires_grad(learn_)) {}

  tessera::sdk::Params parameters() override {
    if (!learn_) return {};
    return {{"logit_scale", logit_scale_}};
  }

  void compute(const tessera::sdk::TensorSet& batch, tessera::sdk::Terms& terms) override {
    const at::Tensor img = batch.get(image_);  // (B, D)
    const at::Tensor txt = batch.get(text_);   // (B, D)
    if (img.dim() != 2 || txt.dim() != 2 || img.sizes() != txt.sizes())
      throw tessera::sdk::Error(TSR_ERR_TYPE, "'" + image_ + "' and '" + text_ + "' must both be (B, D) with the same "
                                "B and D, got " + std::to_string(img.dim()) + "-d and " + std::to_string(txt.dim()) + "-d");
    const at::Tensor scale = at::exp(at::clamp_max(logit_scale_, max_scale_)).to(img.device());
    const at::Tensor logits = scale * at::matmul(l2_normalize(img.to(at::kFloat)), l2_normalize(txt.to(at::kFloat)).t());  // (B, B)

    at::Tensor targets;  // (B, B) rows sum to one; symmetric, so it serves both directions
    if (label_.empty()) {
      targets = at::eye(img.size(0), logits.options());
    } else {
      const at::Tensor y = batch.get(label_).to(img.device());  // (B,)
      if (y.dim() != 1 || y.size(0) != img.size(0))
        throw tessera::sdk::Error(TSR_ERR_TYPE, "'" + label_ + "' must be (B,) with B = " + std::to_string(img.size(0)));
      const at::Tensor same = y.unsqueeze(1).eq(y.unsqueeze(0)).to(at::kFloat);  // (B, B)
      targets = same / same.sum(1, /*keepdim=*/true);
    }
    const at::Tensor loss = 0.5 * (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.t(), targets));
    terms.emit(term_, loss);  // scalar: implicit gradient of one
  }

 private:
  std::string image_, text_, label_, term_;
  double max_scale_;
  bool learn_;
  at::Tensor logit_scale_;  // () f32, log of the inverse temperature
};

}  // namespace

TESSERA_PLUGIN(Clip, tessera::sdk::Loss, "clip", "1.0.0",
               "CLIP contrastive loss: L2-normalised image and text embeddings, logits = exp(logit_scale) img txt^T, "
               "symmetric cross-entropy (image->text, text->image); same-label pairs as positives when `label` is set.",
               kKeys)

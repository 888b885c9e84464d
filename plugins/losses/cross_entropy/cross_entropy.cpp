// plugins/losses/cross_entropy/cross_entropy.cpp — loss reducer "cross_entropy": mean
// cross-entropy of named logits against named class labels, with label smoothing.
#include <tessera/plugin.hpp>

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_string("logits", "\"logits\"", "batch tensor of class scores, (B, C)"),
    tessera::sdk::key_string("target", "\"label\"", "batch tensor of class indices, (B,) int64"),
    tessera::sdk::key_float("label_smoothing", "0.0", "mass spread uniformly over all classes", 0.0, 1.0),
    tessera::sdk::key_string("term", "\"cross_entropy\"", "name of the emitted term"),
};

class CrossEntropy : public tessera::sdk::Loss {
 public:
  explicit CrossEntropy(const tessera::sdk::Host& host)
      : logits_(host.get_string("logits")), target_(host.get_string("target")),
        smoothing_(host.get_float("label_smoothing")), term_(host.get_string("term")) {}

  void compute(const tessera::sdk::TensorSet& batch, tessera::sdk::Terms& terms) override {
    at::Tensor logits = batch.get(logits_);  // (B, C)
    at::Tensor target = batch.get(target_);  // (B,) int64
    if (logits.dim() != 2)
      throw tessera::sdk::Error(TSR_ERR_TYPE, "'" + logits_ + "' must be (B, C), got " + std::to_string(logits.dim()) + " dims");
    at::Tensor loss = at::cross_entropy_loss(logits.to(at::kFloat), target.to(logits.device()), {},
                                             at::Reduction::Mean, -100, smoothing_);
    terms.emit(term_, loss);  // scalar: implicit gradient of one
  }

 private:
  std::string logits_, target_;
  double smoothing_;
  std::string term_;
};

}  // namespace

TESSERA_PLUGIN(CrossEntropy, tessera::sdk::Loss, "cross_entropy", "1.0.0",
               "Cross-entropy of logits against class labels (mean over the batch), optional label smoothing.",
               kKeys)

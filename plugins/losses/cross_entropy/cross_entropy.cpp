// plugins/losses/cross_entropy/cross_entropy.cpp — loss reducer "cross_entropy": cross-entropy of
// named logits, (B, C) or sequences (B, T, C), against class labels, with label smoothing, an
// ignored label, and normalisation by the micro-batch or by the tokens of the global batch.
#include <tessera/plugin.hpp>

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_string("logits", "\"logits\"", "batch tensor of class scores, (B, C) or (B, T, C)"),
    tessera::sdk::key_string("target", "\"label\"", "batch tensor of class indices, (B,) or (B, T) int64"),
    tessera::sdk::key_float("label_smoothing", "0.0", "mass spread uniformly over all classes", 0.0, 1.0),
    tessera::sdk::key_int("ignore_index", "-100", "targets with this value (e.g. padding) add no loss and no token",
                          -(1LL << 62), 1LL << 62),
    tessera::sdk::key_enum("normalize", "\"mean\"",
                             "\"mean\": the mean over the micro-batch's (non-ignored) targets; \"tokens\": the sum, "
                             "divided by the core by the non-ignored targets of the whole global batch (across "
                             "micro-batches and ranks), so every token weighs the same",
                             "mean|tokens"),
    tessera::sdk::key_string("term", "\"cross_entropy\"", "name of the emitted term"),
};

class CrossEntropy : public tessera::sdk::Loss {
 public:
  explicit CrossEntropy(const tessera::sdk::Host& host)
      : logits_(host.get_string("logits")), target_(host.get_string("target")),
        smoothing_(host.get_float("label_smoothing")), ignore_(host.get_int("ignore_index")),
        per_token_(host.get_string("normalize") == "tokens"), term_(host.get_string("term")) {}

  void compute(const tessera::sdk::TensorSet& batch, tessera::sdk::Terms& terms) override {
    at::Tensor logits = batch.get(logits_);  // (B, C) or (B, T, C)
    at::Tensor target = batch.get(target_);  // (B,) or (B, T) int64
    if (logits.dim() != 2 && logits.dim() != 3)
      throw tessera::sdk::Error(TSR_ERR_TYPE, "'" + logits_ + "' must be (B, C) or (B, T, C), got " +
                                                  std::to_string(logits.dim()) + " dims");
    if (target.dim() != logits.dim() - 1 || !target.sizes().equals(logits.sizes().slice(0, logits.dim() - 1)))
      throw tessera::sdk::Error(TSR_ERR_TYPE, "'" + target_ + "' has shape " + c10::str(target.sizes()) +
                                                  ", the logits '" + logits_ + "' " + c10::str(logits.sizes()) +
                                                  ": expected the logits' shape without its last dim");
    if (logits.dim() == 3) {  // the sequence's positions are rows
      logits = logits.reshape({-1, logits.size(2)});
      target = target.reshape({-1});
    }
    const at::Reduction::Reduction reduction = per_token_ ? at::Reduction::Sum : at::Reduction::Mean;
    at::Tensor loss = at::cross_entropy_loss(logits.to(at::kFloat), target.to(logits.device()), {}, reduction,
                                             ignore_, smoothing_);
    if (per_token_) terms.emit_sum(term_, loss);  // the core divides by the global batch's tokens
    else terms.emit(term_, loss);                 // scalar: implicit gradient of one
  }

  // normalize = "tokens": the targets the loss counts, those that are not ignore_index.
  int64_t count_units(const tessera::sdk::TensorSet& batch) override {
    return per_token_ ? batch.get(target_).ne(ignore_).sum().item<int64_t>() : -1;
  }

 private:
  std::string logits_, target_;
  double smoothing_;
  int64_t ignore_;
  bool per_token_;
  std::string term_;
};

}  // namespace

TESSERA_PLUGIN(CrossEntropy, tessera::sdk::Loss, "cross_entropy", "1.1.0",
               "Cross-entropy of logits, (B, C) or (B, T, C), against class labels: label smoothing, an ignored "
               "label, the mean per micro-batch or per token of the global batch.",
               kKeys)

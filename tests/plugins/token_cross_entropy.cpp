// tests/plugins/token_cross_entropy.cpp — a loss reducer for the transformer tests and the
// checkpointing bench: mean next-token cross-entropy of (B, T, V) logits against (B, T) labels.
#include <tessera/plugin.hpp>

namespace sdk = tessera::sdk;

namespace {

const tsr_config_key kKeys[] = {
    sdk::key_string("logits", "\"logits\"", "batch tensor of scores, (B, T, V)"),
    sdk::key_string("target", "\"labels\"", "batch tensor of the next tokens, (B, T) int64"),
};

class TokenCrossEntropy final : public sdk::Loss {
 public:
  explicit TokenCrossEntropy(const sdk::Host& host)
      : logits_(host.get_string("logits")), target_(host.get_string("target")) {}
  void compute(const sdk::TensorSet& batch, sdk::Terms& terms) override {
    const at::Tensor logits = batch.get(logits_);  // (B, T, V)
    const at::Tensor target = batch.get(target_);  // (B, T) int64
    if (logits.dim() != 3) throw sdk::Error(TSR_ERR_TYPE, "'" + logits_ + "' must be (B, T, V)");
    // Mean over every token of the micro-batch, in fp32.
    terms.emit("lm", at::cross_entropy_loss(logits.to(at::kFloat).flatten(0, 1), target.to(logits.device()).flatten()));
  }

 private:
  std::string logits_, target_;
};

}  // namespace

TESSERA_PLUGIN(TokenCrossEntropy, sdk::Loss, "token_cross_entropy", "1.0.0",
               "Test loss: mean token cross-entropy of (B, T, V) logits against (B, T) labels.", kKeys)

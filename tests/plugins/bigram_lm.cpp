// tests/plugins/bigram_lm.cpp — a test encoder for sequence losses: logits (B, T, V) of the next
// token are a learned table's row for the current one (a bigram language model), so each
// position's loss depends on its own token only, whatever the padding around it.
#include <tessera/plugin.hpp>

namespace sdk = tessera::sdk;

namespace {

const tsr_config_key kKeys[] = {
    sdk::key_int("vocab", "16", "token ids are in [0, vocab)", 2, 1 << 20),
    sdk::key_string("input", "\"input_ids\"", "(B, T) int64 token ids"),
    sdk::key_string("output", "\"logits\"", "(B, T, vocab) next-token scores"),
};

class BigramLm final : public sdk::Encoder {
 public:
  explicit BigramLm(const sdk::Host& host)
      : input_(host.get_string("input")), output_(host.get_string("output")),
        table_(at::randn({host.get_int("vocab"), host.get_int("vocab")}).mul_(0.1).set_requires_grad(true)) {}
  sdk::Params parameters() override { return {{"table", table_}}; }
  void forward(sdk::TensorSet& batch) override { batch.put(output_, at::embedding(table_, batch.get(input_))); }
  double flops(const sdk::TensorSet& batch) override {
    return 6.0 * static_cast<double>(batch.get(input_).numel());  // a lookup: nominal, for the MFU test
  }

 private:
  std::string input_, output_;
  at::Tensor table_;  // (V, V) f32: row = current token, column = next token
};

}  // namespace

TESSERA_PLUGIN(BigramLm, sdk::Encoder, "bigram_lm", "1.0.0", "Test encoder: a bigram language model.", kKeys)

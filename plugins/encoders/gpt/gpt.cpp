// plugins/encoders/gpt/gpt.cpp — encoder plugin "gpt": a GPT-2 / nanoGPT language model (token and
// position embeddings, causal pre-norm blocks, final norm, tied or separate lm head) over input_ids.
// The model is exactly /work/briefs/gpt_spec.md: keys, parameter names and order, init, forward.
#include <tessera/plugin.hpp>

#include "transformer.hpp"

namespace {

namespace sdk = tessera::sdk;
namespace tf = tessera::transformer;

const tsr_config_key kKeys[] = {
    sdk::key_string("input", "\"input_ids\"", "batch tensor to read: (B, T) int64 token ids, T <= max_seq_len"),
    sdk::key_string("output", "\"logits\"", "batch tensor to write: (B, T, vocab_size) in the compute dtype"),
    sdk::key_int("vocab_size", "50304", "rows of the token embedding (and of the logits)", 1, 1 << 30),
    sdk::key_int("max_seq_len", "1024", "longest sequence (rows of the learned position embedding)", 1, 1 << 24),
    sdk::key_bool("tie_embeddings", "true", "the lm head is wte (no lm_head.weight)"),
    TESSERA_TRANSFORMER_KEYS("768", "12", "12"),
};

class Gpt : public sdk::Encoder {
 public:
  explicit Gpt(const sdk::Host& host)
      : input_(host.get_string("input")), output_(host.get_string("output")),
        max_seq_len_(host.get_int("max_seq_len")), cfg_(tf::StackConfig::read(host)),
        wte_(tf::normal_param({host.get_int("vocab_size"), cfg_.d_model}, cfg_.init_std)),
        wpe_(cfg_.rotary ? at::Tensor() : tf::normal_param({max_seq_len_, cfg_.d_model}, cfg_.init_std)),
        h_(cfg_), ln_f_(cfg_.d_model, cfg_.norm, cfg_.norm_eps, cfg_.bias),
        lm_head_(host.get_bool("tie_embeddings") ? at::Tensor()
                                                 : tf::normal_param({wte_.size(0), cfg_.d_model}, cfg_.init_std)) {}

  sdk::Params parameters() override {
    sdk::Params p{{"wte.weight", wte_}};
    if (wpe_.defined()) p.emplace_back("wpe.weight", wpe_);
    h_.append(p);
    ln_f_.append("ln_f.", p);
    if (lm_head_.defined()) p.emplace_back("lm_head.weight", lm_head_);
    return p;
  }
  void train(bool training) override { training_ = training; }

  void forward(sdk::TensorSet& batch) override {
    const at::Tensor ids = batch.get(input_);  // (B, T) int64
    if (ids.dim() != 2 || ids.scalar_type() != at::kLong)
      throw sdk::Error(TSR_ERR_TYPE, "'" + input_ + "' must be (B, T) int64 token ids");
    const int64_t t = ids.size(1);
    if (t > max_seq_len_)
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "'" + input_ + "' has T = " + std::to_string(t) +
                                                     " tokens, more than max_seq_len = " + std::to_string(max_seq_len_));
    at::Tensor x = at::embedding(wte_, ids);  // (B, T, d)
    if (wpe_.defined()) x = x + wpe_.narrow(0, 0, t);
    x = tf::train_dropout(x, cfg_.dropout, training_);
    x = ln_f_(h_.forward(x, tf::AttentionMask{/*causal=*/true, {}}, training_));
    batch.put(output_, at::linear(x, lm_head_.defined() ? lm_head_ : wte_));  // (B, T, V)
  }

 private:
  std::string input_, output_;
  int64_t max_seq_len_;
  bool training_ = true;
  tf::StackConfig cfg_;
  at::Tensor wte_;      // (V, d)
  at::Tensor wpe_;      // (max_seq_len, d); undefined for rotary positions
  tf::Stack h_;         // n_layers causal blocks
  tf::Norm ln_f_;       // (d,) weight [and bias]
  at::Tensor lm_head_;  // (V, d); undefined when tied to wte
};

}  // namespace

TESSERA_PLUGIN(Gpt, sdk::Encoder, "gpt", "1.0.0",
               "GPT-2 / nanoGPT language model: token (+ learned position) embedding -> n_layers causal pre-norm "
               "blocks (LayerNorm/RMSNorm, GELU/SwiGLU, learned/rotary positions) -> final norm -> logits over "
               "the vocabulary (lm head tied to the token embedding by default).",
               kKeys)

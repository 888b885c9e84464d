// plugins/encoders/text_transformer/text_transformer.cpp — encoder plugin "text_transformer": a
// transformer caption encoder over byte ids (id = byte + 1, 0 = padding), pooled, then a Linear.
//   pool = "mean": bidirectional blocks with the key padding mask, masked mean over the real bytes;
//   pool = "last": causal blocks (CLIP's text tower), the state of the last real byte.
// Either way the embedding of a caption does not depend on how much padding follows it.
#include <tessera/plugin.hpp>

#include "transformer.hpp"

namespace {

namespace sdk = tessera::sdk;
namespace tf = tessera::transformer;

constexpr int64_t kVocab = 257;  // 256 byte values + padding (0)

const tsr_config_key kKeys[] = {
    sdk::key_string("input", "\"caption_ids\"",
                    "batch tensor to read: (B, T) int64 byte ids, id = byte + 1, 0 = padding after the caption"),
    sdk::key_string("output", "\"text_emb\"", "batch tensor to write: (B, out_features)"),
    sdk::key_int("max_seq_len", "256", "longest caption in bytes (rows of the learned position embedding)", 1,
                 1 << 24),
    sdk::key_enum("pool", "\"mean\"",
                  "mean: bidirectional attention over the real bytes, masked mean; last: causal attention, the "
                  "last real byte's state",
                  "mean|last"),
    sdk::key_int("out_features", "128", "size of the output embedding", 1, 1 << 20),
    TESSERA_TRANSFORMER_KEYS("128", "2", "4"),
};

class TextTransformer : public sdk::Encoder {
 public:
  explicit TextTransformer(const sdk::Host& host)
      : input_(host.get_string("input")), output_(host.get_string("output")),
        max_seq_len_(host.get_int("max_seq_len")), mean_pool_(host.get_string("pool") == "mean"),
        cfg_(tf::StackConfig::read(host)) {
    const int64_t d = cfg_.d_model;
    // In parameter order, so the init draws follow it.
    wte_ = tf::normal_param({kVocab, d}, cfg_.init_std);
    if (!cfg_.rotary) wpe_ = tf::normal_param({max_seq_len_, d}, cfg_.init_std);
    h_ = std::make_unique<tf::Stack>(cfg_);
    ln_f_ = tf::Norm(d, cfg_.norm, cfg_.norm_eps, cfg_.bias);
    head_ = tf::Linear(d, host.get_int("out_features"), cfg_.bias, cfg_.init_std);
  }

  sdk::Params parameters() override {
    sdk::Params p{{"wte.weight", wte_}};
    if (wpe_.defined()) p.emplace_back("wpe.weight", wpe_);
    h_->append(p);
    ln_f_.append("ln_f.", p);
    head_.append("head.", p);
    return p;
  }
  void train(bool training) override { training_ = training; }

  void forward(sdk::TensorSet& batch) override {
    const at::Tensor ids = batch.get(input_);  // (B, T) int64
    if (ids.dim() != 2 || ids.scalar_type() != at::kLong)
      throw sdk::Error(TSR_ERR_TYPE, "'" + input_ + "' must be (B, T) int64 byte ids");
    const int64_t t = ids.size(1);
    if (t > max_seq_len_)
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "'" + input_ + "' has T = " + std::to_string(t) +
                                                     " bytes, more than max_seq_len = " + std::to_string(max_seq_len_));
    const at::Tensor real = ids.gt(0);  // (B, T) bool
    at::Tensor x = at::embedding(wte_, ids);  // (B, T, d)
    if (wpe_.defined()) x = x + wpe_.narrow(0, 0, t);
    x = tf::train_dropout(x, cfg_.dropout, training_);
    // Causal attention never looks at the padding after a caption; bidirectional needs the mask.
    const tf::AttentionMask mask = mean_pool_ ? tf::AttentionMask{false, real} : tf::AttentionMask{true, {}};
    x = ln_f_(h_->forward(x, mask, training_));  // (B, T, d)
    at::Tensor pooled;                             // (B, d)
    if (mean_pool_) {
      // Masked mean; an empty caption pools to zeros.
      const at::Tensor m = real.unsqueeze(-1).to(x.scalar_type());  // (B, T, 1)
      pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0);
    } else {
      // The last real byte (position 0 for an empty caption).
      const at::Tensor last = (real.sum(1) - 1).clamp_min(0);  // (B,) int64
      pooled = x.gather(1, last.view({-1, 1, 1}).expand({-1, 1, x.size(2)})).squeeze(1);
    }
    batch.put(output_, head_(pooled));  // (B, out_features)
  }

 private:
  std::string input_, output_;
  int64_t max_seq_len_;
  bool mean_pool_;
  bool training_ = true;
  tf::StackConfig cfg_;
  at::Tensor wte_;                // (257, d): row 0 is padding's (masked or after the pooled byte)
  at::Tensor wpe_;                // (max_seq_len, d); undefined for rotary positions
  std::unique_ptr<tf::Stack> h_;  // n_layers blocks, bidirectional (mean) or causal (last)
  tf::Norm ln_f_;                 // (d,) weight [and bias]
  tf::Linear head_;               // (out_features, d) [and (out_features,)]
};

}  // namespace

TESSERA_PLUGIN(TextTransformer, sdk::Encoder, "text_transformer", "1.0.0",
               "Transformer caption encoder over byte ids: byte (+ learned position) embedding -> n_layers pre-norm "
               "blocks, bidirectional with the padding mask (pool = mean) or causal (pool = last) -> final norm -> "
               "masked mean or last real byte -> Linear to out_features.",
               kKeys)

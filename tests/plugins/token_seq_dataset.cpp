// tests/plugins/token_seq_dataset.cpp — a dataset plugin for the sequence-loss tests: example i
// is a token sequence of 3 + (7 i) % 13 tokens (ids in [1, vocab)), served as input_ids (without
// its last token, padded with 0) and labels (without its first, padded with -100): the core
// loader pads them into batches whose real lengths vary. With cycle = true token j of example i is
// 1 + (i + j) % (vocab - 1) (each token is followed by the next: what `tessera generate` must
// reproduce). Its tokenizer writes id k as the letter 'a' + k - 1.
#include <tessera/plugin.hpp>

namespace sdk = tessera::sdk;

namespace {

const tsr_config_key kKeys[] = {
    sdk::key_int("size", "64", "examples of split train (val has a quarter)", 1, 1e9),
    sdk::key_int("vocab", "16", "token ids are in [1, vocab)", 2, 27),
    sdk::key_bool("cycle", "false", "each token is followed by the next one (cyclically)"),
};

class TokenSeqDataset final : public sdk::Dataset {
 public:
  explicit TokenSeqDataset(const sdk::Host& host)
      : size_(host.get_int("size")), vocab_(host.get_int("vocab")), cycle_(host.get_bool("cycle")) {}
  std::vector<sdk::Split> splits() override { return {{"train", size_}, {"val", std::max<int64_t>(size_ / 4, 1)}}; }
  std::vector<sdk::Field> fields() override {
    return {{"input_ids", TSR_DTYPE_I64, {-1}, 0.0, "tokens 0..n-2 of the sequence"},
            {"labels", TSR_DTYPE_I64, {-1}, -100.0, "tokens 1..n-1: the next token at each position"}};
  }
  void get(const sdk::Request& req, sdk::TensorSet& out) override {
    const int64_t n = 3 + (7 * req.index) % 13;
    at::Tensor tokens = at::empty({n}, at::kLong);  // (n,) i64
    for (int64_t j = 0; j < n; ++j)
      tokens[j] = 1 + (cycle_ ? req.index + j : req.index * 31 + j * j * 17 + j) % (vocab_ - 1);
    out.put("input_ids", tokens.narrow(0, 0, n - 1).clone());
    out.put("labels", tokens.narrow(0, 1, n - 1).clone());
  }
  at::Tensor encode_text(const std::string& /*field*/, const std::string& text) override {
    std::vector<int64_t> ids;
    for (char c : text)
      if (c >= 'a' && c < 'a' + vocab_ - 1) ids.push_back(c - 'a' + 1);
    return at::tensor(ids, at::kLong);
  }
  std::string decode_text(const std::string& /*field*/, const at::Tensor& ids) override {
    std::string text;
    const at::Tensor c = ids.to(at::kLong).contiguous();
    for (int64_t i = 0; i < c.numel(); ++i) text.push_back(static_cast<char>('a' + c.data_ptr<int64_t>()[i] - 1));
    return text;
  }

 private:
  int64_t size_, vocab_;
  bool cycle_;
};

}  // namespace

TESSERA_PLUGIN(TokenSeqDataset, sdk::Dataset, "token_seq_dataset", "1.0.0",
               "Test dataset: token sequences of varying length (input_ids, labels).", kKeys)

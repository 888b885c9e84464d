// token_shards_plugin.cpp — dataset plugin "token_shards": llm.c / nanoGPT token shards served as
// windows (input_ids, labels), each (seq_len,) i64. The reader lives in token_shards.cpp.
#include <tessera/plugin.hpp>

#include <string>
#include <vector>

#include "token_shards.hpp"

namespace {

namespace ts = tessera::token_shards;
namespace sdk = tessera::sdk;

const tsr_config_key kKeys[] = {
    sdk::key_string("train", "\"\"",
                    "glob of the training shards, e.g. \"data/tokens_train_*.bin\" (sorted by name; ~ expands); "
                    "empty = no train split"),
    sdk::key_string("val", "\"\"", "glob of the validation shards; empty = no val split (one of train, val is set)"),
    sdk::key_int("seq_len", "1024", "T: tokens per example; an example reads T + 1 consecutive tokens of one shard", 1,
                 1 << 24),
    sdk::key_int("stride", "0", "tokens between the starts of consecutive windows; 0 = seq_len (no overlap)", 0,
                 1 << 30),
    sdk::key_int("vocab_size", "50257",
                 "the vocabulary the shards were written with; a served token >= vocab_size is an error", 1,
                 2147483647.0),
    sdk::key_enum("format", "\"auto\"",
                  "auto: llm.c when the file starts with an llm.c magic, else nanoGPT's headerless uint16; "
                  "llmc; nanogpt",
                  "auto|llmc|nanogpt"),
    sdk::key_string("tokenizer", "\"\"",
                    "SentencePiece .model (~/ expands) for encode_text/decode_text; empty = raw bytes when vocab_size = 256, "
                    "else no tokenizer"),
};

class TokenShardsDataset : public sdk::Dataset {
 public:
  explicit TokenShardsDataset(const sdk::Host& host) : data_(options(host)) { host.info(data_.summary()); }

  std::vector<sdk::Split> splits() override {
    std::vector<sdk::Split> out;
    for (const auto& s : data_.splits()) out.push_back({s->name(), s->size()});
    return out;
  }

  std::vector<sdk::Field> fields() override {
    const int64_t t = data_.seq_len();
    return {{"input_ids", TSR_DTYPE_I64, {t}, 0.0, "tokens [i, i + seq_len) of a window"},
            {"labels", TSR_DTYPE_I64, {t}, 0.0, "tokens [i + 1, i + seq_len + 1): the next token of each input"}};
  }

  void get(const sdk::Request& req, sdk::TensorSet& out) override {
    ts::Example e = data_.get(req.split, req.index);
    out.put("input_ids", e.input_ids);
    out.put("labels", e.labels);
  }

  at::Tensor encode_text(const std::string& field, const std::string& text) override {
    const std::vector<int64_t> ids = tokenizer(field).encode(text);
    return at::tensor(ids, at::kLong);
  }

  std::string decode_text(const std::string& field, const at::Tensor& ids) override {
    if (ids.dim() != 1 || at::isFloatingType(ids.scalar_type()) || ids.scalar_type() == at::kBool)
      throw sdk::Error(TSR_ERR_TYPE, "decode_text takes a 1-D integer tensor of ids");
    at::Tensor v = ids.to(at::kLong).contiguous();
    const int64_t* p = v.data_ptr<int64_t>();
    return tokenizer(field).decode(std::vector<int64_t>(p, p + v.numel()));
  }

 private:
  static ts::Options options(const sdk::Host& host) {
    ts::Options o;
    o.train = host.get_string("train");
    o.val = host.get_string("val");
    o.seq_len = host.get_int("seq_len");
    o.stride = host.get_int("stride");
    o.vocab_size = host.get_int("vocab_size");
    o.format = ts::parse_format(host.get_string("format"));
    o.tokenizer = host.get_string("tokenizer");
    return o;
  }

  const ts::Tokenizer& tokenizer(const std::string& field) const {
    if (field != "input_ids" && field != "labels")
      throw sdk::Error(TSR_ERR_NOT_FOUND, "token_shards has no text field '" + field + "' (it has input_ids, labels)");
    if (!data_.tokenizer())
      throw sdk::Error(TSR_ERR_UNSUPPORTED,
                       "token_shards has no tokenizer: set tokenizer = a SentencePiece .model (raw bytes need "
                       "vocab_size = 256)");
    return *data_.tokenizer();
  }

  ts::TokenShards data_;
};

}  // namespace

TESSERA_PLUGIN(TokenShardsDataset, tessera::sdk::Dataset, "token_shards", "1.0.0",
               "llm.c / nanoGPT token shards (memory-mapped) as (input_ids, labels) windows of seq_len tokens",
               kKeys)

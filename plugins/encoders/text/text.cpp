// plugins/encoders/text/text.cpp — encoder plugin "text": byte-level caption encoder (byte embedding,
// 1-D convolutions, masked max+mean pooling) plus a bag of hashed words and bigrams, then an MLP.
#include <tessera/plugin.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_string("input", "\"caption_ids\"",
                             "batch tensor to read: (N, T) int64 byte ids, id = byte + 1, 0 = padding"),
    tessera::sdk::key_string("output", "\"text_emb\"", "batch tensor to write, (N, out_features) float32"),
    tessera::sdk::key_int("embed_dim", "32", "size of the byte embedding", 1, 4096),
    tessera::sdk::key_int("channels", "64", "channels of each 1-D convolution", 1, 4096),
    tessera::sdk::key_int("conv_layers", "2", "1-D convolution + ReLU layers over the bytes; 0 = none", 0, 16),
    tessera::sdk::key_int("kernel_size", "5", "width of each convolution, odd", 1, 31),
    tessera::sdk::key_int("word_buckets", "4096", "hash buckets for words and word bigrams; 0 = no word features", 0,
                          1 << 24),
    tessera::sdk::key_int("word_dim", "64", "size of the mean hashed word/bigram embedding", 1, 4096),
    tessera::sdk::key_int("hidden_features", "256", "width of the hidden Linear+ReLU layer; 0 = none", 0, 1 << 20),
    tessera::sdk::key_int("out_features", "128", "size of the output embedding", 1, 1 << 20),
    tessera::sdk::key_float("dropout", "0.0", "dropout on the pooled features (training only)", 0.0, 1.0),
};

constexpr int64_t kVocab = 257;  // 256 byte values + padding (0)

// torch.nn's default for Linear/Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
at::Tensor uniform_fan_in(at::IntArrayRef shape, int64_t fan_in) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  return at::empty(shape).uniform_(-bound, bound).set_requires_grad(true);
}

struct Linear {
  at::Tensor weight;  // (out, in) f32
  at::Tensor bias;    // (out,) f32
  Linear(int64_t in, int64_t out) : weight(uniform_fan_in({out, in}, in)), bias(uniform_fan_in({out}, in)) {}
  at::Tensor operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }
};

struct Conv1d {
  at::Tensor weight;  // (out, in, k) f32
  at::Tensor bias;    // (out,) f32
  Conv1d(int64_t in, int64_t out, int64_t k)
      : weight(uniform_fan_in({out, in, k}, in * k)), bias(uniform_fan_in({out}, in * k)) {}
};

uint64_t fnv1a(const std::string& s, uint64_t h = 14695981039346656037ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

bool word_byte(int64_t b) {  // letters, digits and inner hyphens make words
  return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '-';
}

class Text : public tessera::sdk::Encoder {
 public:
  explicit Text(const tessera::sdk::Host& host)
      : input_(host.get_string("input")), output_(host.get_string("output")),
        kernel_(host.get_int("kernel_size")), buckets_(host.get_int("word_buckets")),
        dropout_(host.get_float("dropout")) {
    if (kernel_ % 2 == 0)
      throw tessera::sdk::Error(TSR_ERR_INVALID_ARGUMENT,
                                "kernel_size must be odd (same-length convolution), got " + std::to_string(kernel_));
    const int64_t embed = host.get_int("embed_dim"), channels = host.get_int("channels");
    // nn.Embedding(257, embed, padding_idx=0): N(0, 1), the padding row zero.
    byte_embedding_ = at::randn({kVocab, embed});
    byte_embedding_[0].zero_();
    byte_embedding_.set_requires_grad(true);
    int64_t width = embed;
    for (int64_t i = 0; i < host.get_int("conv_layers"); ++i) {
      convs_.emplace_back(width, channels, kernel_);
      width = channels;
    }
    int64_t features = 2 * width;  // max and mean pooling
    if (buckets_ > 0) {
      word_embedding_ = at::randn({buckets_, host.get_int("word_dim")}).set_requires_grad(true);  // nn.EmbeddingBag
      features += host.get_int("word_dim");
    }
    if (host.get_int("hidden_features") > 0) {
      fc_.emplace_back(features, host.get_int("hidden_features"));
      features = host.get_int("hidden_features");
    }
    fc_.emplace_back(features, host.get_int("out_features"));
  }

  tessera::sdk::Params parameters() override {
    tessera::sdk::Params p{{"byte_embedding.weight", byte_embedding_}};
    for (size_t i = 0; i < convs_.size(); ++i) {
      p.emplace_back("conv" + std::to_string(i) + ".weight", convs_[i].weight);
      p.emplace_back("conv" + std::to_string(i) + ".bias", convs_[i].bias);
    }
    if (word_embedding_.defined()) p.emplace_back("word_embedding.weight", word_embedding_);
    for (size_t i = 0; i < fc_.size(); ++i) {
      p.emplace_back("fc" + std::to_string(i) + ".weight", fc_[i].weight);
      p.emplace_back("fc" + std::to_string(i) + ".bias", fc_[i].bias);
    }
    return p;
  }
  void train(bool training) override { training_ = training; }

  void forward(tessera::sdk::TensorSet& batch) override {
    const at::Tensor ids = batch.get(input_);  // (N, T) int64
    if (ids.dim() != 2 || ids.scalar_type() != at::kLong)
      throw tessera::sdk::Error(TSR_ERR_TYPE, "'" + input_ + "' must be (N, T) int64 byte ids");
    const at::Tensor mask = ids.gt(0).to(at::kFloat).unsqueeze(1);  // (N, 1, T)
    at::Tensor x = at::embedding(byte_embedding_, ids, /*padding_idx=*/0).transpose(1, 2);  // (N, E, T)
    for (const auto& conv : convs_) {
      // Zeroing the padding after every layer makes the result independent of how much there is.
      x = at::relu(at::conv1d(x, conv.weight, conv.bias, 1, kernel_ / 2)) * mask;  // (N, C, T)
    }
    // Masked max and mean over the caption's bytes; an empty caption pools to zeros.
    const at::Tensor pad = mask.eq(0);                                                   // (N, 1, T)
    const at::Tensor empty = pad.all(2);                                                 // (N, 1)
    const at::Tensor max = std::get<0>(x.masked_fill(pad, -INFINITY).max(2)).masked_fill(empty, 0.0);  // (N, C)
    const at::Tensor mean = x.sum(2) / mask.sum(2).clamp_min(1.0);                       // (N, C)
    std::vector<at::Tensor> features{max, mean};
    if (word_embedding_.defined()) features.push_back(word_features(ids));  // (N, word_dim)
    at::Tensor h = at::cat(features, 1);
    if (dropout_ > 0) h = at::dropout(h, dropout_, training_);
    for (size_t i = 0; i + 1 < fc_.size(); ++i) h = at::relu(fc_[i](h));
    batch.put(output_, fc_.back()(h));  // (N, out_features)
  }

 private:
  // Mean embedding of the hashed lower-cased words and word bigrams of each caption.
  at::Tensor word_features(const at::Tensor& ids) const {
    const at::Tensor cpu = ids.to(at::kCPU).contiguous();
    const int64_t n = cpu.size(0), t = cpu.size(1);
    const int64_t* p = cpu.data_ptr<int64_t>();
    std::vector<int64_t> index, offsets;
    for (int64_t i = 0; i < n; ++i) {
      offsets.push_back(static_cast<int64_t>(index.size()));
      std::vector<std::string> words;
      std::string word;
      for (int64_t j = 0; j <= t; ++j) {
        const int64_t b = j < t ? p[i * t + j] - 1 : -1;  // byte, or -1 for padding / the end
        if (b >= 0 && word_byte(b)) {
          word.push_back(static_cast<char>(b >= 'A' && b <= 'Z' ? b - 'A' + 'a' : b));
        } else if (!word.empty()) {
          words.push_back(word);
          word.clear();
        }
        if (b < 0) break;
      }
      for (size_t w = 0; w < words.size(); ++w) {
        index.push_back(static_cast<int64_t>(fnv1a(words[w]) % static_cast<uint64_t>(buckets_)));
        if (w > 0)
          index.push_back(static_cast<int64_t>(fnv1a(words[w], fnv1a(words[w - 1] + " ")) % static_cast<uint64_t>(buckets_)));
      }
    }
    const at::Tensor idx = at::tensor(index, at::kLong).to(ids.device());     // (total words,)
    const at::Tensor off = at::tensor(offsets, at::kLong).to(ids.device());   // (N,)
    // mode 1 = mean; an empty bag gives zeros.
    return std::get<0>(at::embedding_bag(word_embedding_, idx, off, false, 1));  // (N, word_dim)
  }

  std::string input_, output_;
  int64_t kernel_, buckets_;
  double dropout_;
  bool training_ = true;
  at::Tensor byte_embedding_;  // (257, embed_dim) f32, row 0 (padding) zero and never updated
  std::vector<Conv1d> convs_;
  at::Tensor word_embedding_;  // (word_buckets, word_dim) f32; undefined when word_buckets = 0
  std::vector<Linear> fc_;
};

}  // namespace

TESSERA_PLUGIN(Text, tessera::sdk::Encoder, "text", "1.0.0",
               "Caption encoder over byte ids: byte embedding -> [conv1d -> ReLU] x conv_layers -> masked max+mean "
               "pooling, concatenated with a mean bag of hashed words and bigrams -> [Linear -> ReLU] -> Linear.",
               kKeys)

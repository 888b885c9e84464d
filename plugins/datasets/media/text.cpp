// media/text.cpp — select_text, the byte tokenizer, and SentencePiece through the isolated module.
#include "media/text.hpp"

#include <isolated_sentencepiece.hpp>

#include <mutex>
#include <stdexcept>

namespace tessera::media {
namespace {

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<int64_t>(static_cast<unsigned char>(text[i])) + 1;
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string s;
    for (int64_t id : ids) {
      if (id == 0) continue;  // padding
      if (id < 0 || id > 256) throw std::invalid_argument("byte token id " + std::to_string(id) + " is not in 0..256");
      s.push_back(static_cast<char>(id - 1));
    }
    return s;
  }
  int64_t pad_id() const override { return 0; }
  int64_t vocab_size() const override { return 257; }
};

// SentencePiece through the isolated module (plugins/common/sentencepiece says why it is apart).
// Its models promise one caller at a time; datasets encode from several worker threads.
class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    try {
      model_ = spm::sentencepiece().load(path);
    } catch (const std::exception& e) {
      throw std::runtime_error("tokenizer model '" + path + "' does not load: " + e.what());
    }
    pieces_ = model_->piece_size();
    pad_ = model_->pad_id();
  }

  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int> ids;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ids = model_->encode(text);
    }
    return std::vector<int64_t>(ids.begin(), ids.end());
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int> narrow;
    for (int64_t id : ids) {
      if (id < 0 || id >= pieces_)
        throw std::invalid_argument("token id " + std::to_string(id) + " is outside the model's " + std::to_string(pieces_) +
                                    " pieces");
      narrow.push_back(static_cast<int>(id));
    }
    std::lock_guard<std::mutex> lock(mu_);
    return model_->decode(narrow);
  }
  int64_t pad_id() const override { return pad_ >= 0 ? pad_ : 0; }
  int64_t vocab_size() const override { return pieces_; }

 private:
  std::unique_ptr<spm::Model> model_;
  mutable std::mutex mu_;
  int64_t pieces_ = 0, pad_ = -1;
};

}  // namespace

std::string select_text(const uint8_t* data, size_t size, const std::string& lines) {
  std::string s(reinterpret_cast<const char*>(data), size);
  if (s.compare(0, 3, "\xEF\xBB\xBF") == 0) s.erase(0, 3);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') continue;
    if (s[i] == '\n' && lines == "first") break;
    out.push_back(s[i]);
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == '\t' || out.back() == '\n' || out.back() == '\r'))
    out.pop_back();
  return out;
}

std::shared_ptr<const Tokenizer> Tokenizer::open(const std::string& spec) {
  if (spec == "bytes") return std::make_shared<ByteTokenizer>();
  return std::make_shared<SentencePieceTokenizer>(spec);
}

}  // namespace tessera::media

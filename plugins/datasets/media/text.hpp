// media/text.hpp — caption text -> token ids: which lines of a file count, and the tokenizers
// (bytes: id = byte + 1, 0 = padding; or a SentencePiece model).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tessera::media {

// "first": the first line (a Tux Paint stamp's English caption; its translations follow);
// "all": the whole text. Either way without a UTF-8 byte-order mark, with CR LF as LF and
// without trailing white space.
std::string select_text(const uint8_t* data, size_t size, const std::string& lines);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // "bytes", or the path of a SentencePiece .model. Throws std::runtime_error naming the model
  // file when it does not load.
  static std::shared_ptr<const Tokenizer> open(const std::string& spec);
  // Both safe from any thread.
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // What a batch is padded with (bytes: 0; SentencePiece: the model's pad id, or 0 without one).
  virtual int64_t pad_id() const = 0;
  virtual int64_t vocab_size() const = 0;
};

}  // namespace tessera::media

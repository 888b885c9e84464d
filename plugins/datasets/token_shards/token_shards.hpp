// token_shards.hpp — the reader behind the "token_shards" dataset plugin: memory-mapped llm.c and
// nanoGPT token files (TokenShard), the windows of one split (ShardSplit), a tokenizer for
// encode/decode (SentencePiece, or bytes), and the whole dataset (TokenShards).
//
// Formats read:
//   llm.c   256 x int32 little-endian header: [0] magic, [1] version, [2] token count, rest 0;
//           magic 20240520 + version 1: uint16 tokens; magic 20240801 + version 7: uint32 tokens.
//   nanoGPT headerless uint16 little-endian tokens (train.bin / val.bin of nanoGPT's prepare.py).
// Example i of a split is a window of seq_len + 1 consecutive tokens inside one shard: windows
// start every `stride` tokens and never cross a shard's end, so a shard of n tokens holds
// floor((n - seq_len - 1) / stride) + 1 windows (floor((n - 1) / seq_len) for stride = seq_len).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace tessera::spm {
class Model;
}

namespace tessera::token_shards {

// Bad or unreadable data; what() starts with the file it is about.
class ShardError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Format { Auto, Llmc, NanoGpt };
Format parse_format(const std::string& name);  // "auto" | "llmc" | "nanogpt"

constexpr int32_t kLlmcMagicU16 = 20240520;  // version 1, uint16 tokens
constexpr int32_t kLlmcMagicU32 = 20240801;  // version 7, uint32 tokens
constexpr int64_t kLlmcHeaderBytes = 256 * 4;

// One shard file, mapped read-only; the tokens are never copied into RAM as a whole.
class TokenShard {
 public:
  // Opens, maps and checks the header against the file size (throws ShardError naming the file).
  TokenShard(std::string path, Format format);
  ~TokenShard();
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  int64_t tokens() const { return tokens_; }
  int token_bytes() const { return width_; }        // 2 (uint16) or 4 (uint32)
  int64_t header_bytes() const { return header_; }  // 1024 (llm.c) or 0 (nanoGPT)
  std::string kind() const;                         // "llm.c v1 uint16", "nanoGPT uint16"
  // Tokens [begin, begin + n) widened into out[0..n). Any thread. A token >= vocab_size is a
  // ShardError naming the file and the token's byte offset.
  void read(int64_t begin, int64_t n, int64_t vocab_size, int64_t* out) const;

 private:
  std::string path_;
  const unsigned char* map_ = nullptr;  // the whole file, PROT_READ
  size_t map_bytes_ = 0;
  int64_t header_ = 0, tokens_ = 0;
  int width_ = 2;
};

// The shard files a glob pattern matches (`~` expanded), sorted by name; a pattern matching
// nothing, or a match that is not a regular file, is a ShardError naming `key` and the pattern.
std::vector<std::string> expand_glob(const std::string& key, const std::string& pattern);

// The windows of one split over its shards, in file order.
class ShardSplit {
 public:
  // Every file must hold at least seq_len + 1 tokens (ShardError naming the file otherwise).
  ShardSplit(std::string name, const std::vector<std::string>& files, Format format, int64_t seq_len,
             int64_t stride);
  const std::string& name() const { return name_; }
  int64_t size() const { return first_window_.back(); }  // windows (= examples)
  int64_t tokens() const;                                  // in all its shards
  const std::vector<std::unique_ptr<TokenShard>>& shards() const { return shards_; }
  // Window `index` (seq_len + 1 tokens) into out. Any thread.
  void window(int64_t index, int64_t vocab_size, int64_t* out) const;

 private:
  std::string name_;
  int64_t seq_len_, stride_;
  std::vector<std::unique_ptr<TokenShard>> shards_;
  std::vector<int64_t> first_window_;  // (shards + 1,): index of each shard's first window; last = size
};

// Text <-> ids: a SentencePiece model (through plugins/common/sentencepiece), or raw UTF-8 bytes.
class Tokenizer {
 public:
  // Loads a SentencePiece .model (ShardError naming the path when it does not load).
  static std::unique_ptr<Tokenizer> sentencepiece(const std::string& model_path);
  static std::unique_ptr<Tokenizer> bytes();
  ~Tokenizer();
  int64_t vocab_size() const;  // pieces, or 256
  // Any thread (SentencePiece calls are serialised).
  std::vector<int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;  // an id outside the vocabulary: ShardError

 private:
  Tokenizer() = default;
  std::string path_;
  std::unique_ptr<spm::Model> sp_;  // null: bytes
  mutable std::mutex mutex_;
};

// The plugin's config, read from its [data] table.
struct Options {
  std::string train, val;      // glob patterns; empty = no such split (at least one is set)
  int64_t seq_len = 1024;      // T
  int64_t stride = 0;          // 0 = seq_len
  int64_t vocab_size = 50257;  // every served token must be below it
  Format format = Format::Auto;
  std::string tokenizer;       // SentencePiece .model; empty = bytes when vocab_size is 256, else none
};

// A served example: the window's first T tokens and the same shifted by one.
struct Example {
  at::Tensor input_ids;  // (T,) i64
  at::Tensor labels;     // (T,) i64
};

class TokenShards {
 public:
  explicit TokenShards(const Options& options);  // opens every shard (ShardError)
  const std::vector<std::unique_ptr<ShardSplit>>& splits() const { return splits_; }
  int64_t seq_len() const { return options_.seq_len; }
  // Any thread, concurrently.
  Example get(const std::string& split, int64_t index) const;
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }  // null: none
  std::string summary() const;  // one line per split: shards, tokens, windows

 private:
  Options options_;
  std::vector<std::unique_ptr<ShardSplit>> splits_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

}  // namespace tessera::token_shards

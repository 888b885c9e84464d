// token_shards.cpp — the token_shards reader: mmap'd llm.c / nanoGPT shards, windows, tokenizer.
// Every check on a file's bytes happens before a byte past its header is trusted.
#include "token_shards.hpp"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "isolated_sentencepiece.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token shards are little-endian; so is this reader");

namespace tessera::token_shards {
namespace {

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

int32_t load_i32(const unsigned char* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// A file descriptor closed on scope exit.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// "~/x" -> "$HOME/x", as the shard globs expand it.
std::string expand_home(const std::string& path) {
  const char* home = std::getenv("HOME");
  if (path.rfind("~/", 0) == 0 && home && *home) return home + path.substr(1);
  return path;
}

}  // namespace

Format parse_format(const std::string& name) {
  if (name == "auto") return Format::Auto;
  if (name == "llmc") return Format::Llmc;
  if (name == "nanogpt") return Format::NanoGpt;
  throw ShardError("format = " + in_quotes(name) + " is not one of auto, llmc, nanogpt");
}

// ---- one shard ----------------------------------------------------------------------------
TokenShard::TokenShard(std::string path, Format format) : path_(std::move(path)) {
  Fd f{::open(path_.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) throw ShardError(path_ + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) throw ShardError(path_ + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw ShardError(path_ + ": not a regular file");
  map_bytes_ = static_cast<size_t>(st.st_size);
  if (map_bytes_ > 0) {
    void* p = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, f.fd, 0);
    if (p == MAP_FAILED) throw ShardError(path_ + ": cannot map: " + std::strerror(errno));
    map_ = static_cast<const unsigned char*>(p);
  }
  const int64_t size = static_cast<int64_t>(map_bytes_);
  try {
    const int32_t magic = size >= 4 ? load_i32(map_) : 0;
    const bool llmc = format == Format::Llmc ||
                      (format == Format::Auto && (magic == kLlmcMagicU16 || magic == kLlmcMagicU32));
    if (llmc) {
      if (size < kLlmcHeaderBytes)
        throw ShardError(path_ + ": truncated llm.c header: the file has " + std::to_string(size) +
                         " bytes, the header alone " + std::to_string(kLlmcHeaderBytes));
      const int32_t version = load_i32(map_ + 4), count = load_i32(map_ + 8);
      if (magic != kLlmcMagicU16 && magic != kLlmcMagicU32)
        throw ShardError(path_ + ": wrong magic " + std::to_string(magic) + " at byte offset 0 (llm.c token files have " +
                         std::to_string(kLlmcMagicU16) + " or " + std::to_string(kLlmcMagicU32) +
                         "); for nanoGPT's headerless .bin set format = \"nanogpt\" or \"auto\"");
      const int32_t want = magic == kLlmcMagicU16 ? 1 : 7;
      if (version != want)
        throw ShardError(path_ + ": unknown version " + std::to_string(version) + " at byte offset 4 for magic " +
                         std::to_string(magic) + " (expected version " + std::to_string(want) + ")");
      width_ = magic == kLlmcMagicU16 ? 2 : 4;
      if (count < 0)
        throw ShardError(path_ + ": the header's token count " + std::to_string(count) +
                         " (byte offset 8) is negative");
      header_ = kLlmcHeaderBytes;
      tokens_ = count;
      const int64_t expected = header_ + tokens_ * width_;
      if (size != expected)
        throw ShardError(path_ + ": file size " + std::to_string(size) + " bytes disagrees with the header's token count " +
                         std::to_string(count) + " (" + std::to_string(header_) + " + " + std::to_string(count) + " x " +
                         std::to_string(width_) + " = " + std::to_string(expected) + " bytes)");
    } else {
      if (size % 2 != 0)
        throw ShardError(path_ + ": " + std::to_string(size) +
                         " bytes is not a whole number of uint16 tokens (nanoGPT's headerless format)");
      width_ = 2;
      header_ = 0;
      tokens_ = size / 2;
    }
  } catch (...) {
    if (map_) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
    throw;
  }
}

TokenShard::~TokenShard() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
}

std::string TokenShard::kind() const {
  const char* word = width_ == 2 ? "uint16" : "uint32";
  if (header_ == 0) return std::string("nanoGPT ") + word;
  return std::string("llm.c v") + (width_ == 2 ? "1 " : "7 ") + word;
}

void TokenShard::read(int64_t begin, int64_t n, int64_t vocab_size, int64_t* out) const {
  if (begin < 0 || n < 0 || begin + n > tokens_)
    throw ShardError(path_ + ": tokens [" + std::to_string(begin) + ", " + std::to_string(begin + n) +
                     ") are outside its " + std::to_string(tokens_));
  const unsigned char* p = map_ + header_ + begin * width_;
  for (int64_t i = 0; i < n; ++i, p += width_) {
    int64_t token;
    if (width_ == 2) {
      uint16_t v;
      std::memcpy(&v, p, 2);
      token = v;
    } else {
      uint32_t v;
      std::memcpy(&v, p, 4);
      token = v;
    }
    if (token >= vocab_size)
      throw ShardError(path_ + ": token " + std::to_string(token) + " at byte offset " +
                       std::to_string(header_ + (begin + i) * width_) + " is >= vocab_size " +
                       std::to_string(vocab_size));
    out[i] = token;
  }
}

// ---- globs and splits ---------------------------------------------------------------------
std::vector<std::string> expand_glob(const std::string& key, const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), GLOB_TILDE_CHECK, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  if (rc == GLOB_NOSPACE) throw ShardError(key + " = " + in_quotes(pattern) + ": out of memory expanding the pattern");
  if (files.empty()) throw ShardError(key + " = " + in_quotes(pattern) + " matches no file");
  std::sort(files.begin(), files.end());  // byte order, whatever the locale
  for (const auto& f : files)
    if (!std::filesystem::is_regular_file(f))
      throw ShardError(f + ": not a regular file (matched by " + key + " = " + in_quotes(pattern) + ")");
  return files;
}

ShardSplit::ShardSplit(std::string name, const std::vector<std::string>& files, Format format, int64_t seq_len,
                       int64_t stride)
    : name_(std::move(name)), seq_len_(seq_len), stride_(stride), first_window_{0} {
  for (const auto& f : files) {
    auto shard = std::make_unique<TokenShard>(f, format);
    if (shard->tokens() < seq_len + 1)
      throw ShardError(f + ": the shard is too short: " + std::to_string(shard->tokens()) +
                       " tokens, fewer than seq_len + 1 = " + std::to_string(seq_len + 1) +
                       " (an example's inputs and the token after them; windows do not cross shards)");
    first_window_.push_back(first_window_.back() + (shard->tokens() - seq_len - 1) / stride + 1);
    shards_.push_back(std::move(shard));
  }
}

int64_t ShardSplit::tokens() const {
  int64_t n = 0;
  for (const auto& s : shards_) n += s->tokens();
  return n;
}

void ShardSplit::window(int64_t index, int64_t vocab_size, int64_t* out) const {
  const auto k = static_cast<size_t>(std::upper_bound(first_window_.begin(), first_window_.end(), index) -
                                     first_window_.begin() - 1);
  shards_[k]->read((index - first_window_[k]) * stride_, seq_len_ + 1, vocab_size, out);
}

// ---- tokenizer ----------------------------------------------------------------------------
std::unique_ptr<Tokenizer> Tokenizer::sentencepiece(const std::string& model_path) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->path_ = model_path;
  try {
    t->sp_ = spm::sentencepiece().load(model_path);
  } catch (const std::exception& e) {
    throw ShardError(std::string("tokenizer: ") + e.what());
  }
  return t;
}

std::unique_ptr<Tokenizer> Tokenizer::bytes() { return std::unique_ptr<Tokenizer>(new Tokenizer()); }

Tokenizer::~Tokenizer() = default;

int64_t Tokenizer::vocab_size() const { return sp_ ? sp_->piece_size() : 256; }

std::vector<int64_t> Tokenizer::encode(const std::string& text) const {
  if (!sp_) {
    const auto* b = reinterpret_cast<const unsigned char*>(text.data());
    return std::vector<int64_t>(b, b + text.size());  // byte values 0..255
  }
  std::vector<int> ids;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ids = sp_->encode(text);
  }
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  const int64_t n = vocab_size();
  for (int64_t id : ids)
    if (id < 0 || id >= n)
      throw ShardError("id " + std::to_string(id) + " is outside the tokenizer's " + std::to_string(n) +
                       (sp_ ? " pieces (" + path_ + ")" : std::string(" byte values")));
  if (!sp_) return std::string(ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(mutex_);
  return sp_->decode(std::vector<int>(ids.begin(), ids.end()));
}

// ---- the dataset --------------------------------------------------------------------------
TokenShards::TokenShards(const Options& options) : options_(options) {
  if (options_.seq_len < 1) throw ShardError("seq_len = " + std::to_string(options_.seq_len) + " must be >= 1");
  if (options_.stride == 0) options_.stride = options_.seq_len;
  if (options_.stride < 0) throw ShardError("stride = " + std::to_string(options_.stride) + " must be >= 0");
  if (options_.train.empty() && options_.val.empty())
    throw ShardError("train and val are both empty: set at least one to a glob of shard files "
                     "(e.g. train = \"data/tokens_train_*.bin\")");
  std::map<std::string, std::string> owner;  // canonical path -> "train = \"...\""
  for (const auto& [name, pattern] : {std::pair{"train", options_.train}, std::pair{"val", options_.val}}) {
    if (pattern.empty()) continue;
    const std::vector<std::string> files = expand_glob(name, pattern);
    const std::string mine = std::string(name) + " = " + in_quotes(pattern);
    for (const auto& f : files) {
      const std::string key = std::filesystem::weakly_canonical(f).string();
      auto [it, fresh] = owner.emplace(key, mine);
      if (!fresh)
        throw ShardError(f + ": matched by both " + it->second + " and " + mine +
                         "; a shard belongs to one split (validation data would leak into training)");
    }
    splits_.push_back(std::make_unique<ShardSplit>(name, files, options_.format, options_.seq_len, options_.stride));
  }
  if (!options_.tokenizer.empty()) {
    tokenizer_ = Tokenizer::sentencepiece(expand_home(options_.tokenizer));
    if (tokenizer_->vocab_size() > options_.vocab_size)
      throw ShardError("tokenizer = " + in_quotes(options_.tokenizer) + " has " +
                       std::to_string(tokenizer_->vocab_size()) + " pieces, more than vocab_size = " +
                       std::to_string(options_.vocab_size));
  } else if (options_.vocab_size == 256) {
    tokenizer_ = Tokenizer::bytes();
  }
}

Example TokenShards::get(const std::string& split, int64_t index) const {
  for (const auto& s : splits_) {
    if (s->name() != split) continue;
    if (index < 0 || index >= s->size())
      throw ShardError("split '" + split + "' has " + std::to_string(s->size()) + " examples; index " +
                       std::to_string(index) + " is outside it");
    const int64_t t = options_.seq_len;
    at::Tensor w = at::empty({t + 1}, at::kLong);  // (T + 1,) the window
    s->window(index, options_.vocab_size, w.data_ptr<int64_t>());
    return {w.slice(0, 0, t).clone(), w.slice(0, 1, t + 1).clone()};
  }
  throw ShardError("no split '" + split + "'");
}

std::string TokenShards::summary() const {
  std::ostringstream out;
  for (const auto& s : splits_) {
    if (out.tellp() > 0) out << "; ";
    out << s->name() << ": " << s->shards().size() << (s->shards().size() == 1 ? " shard, " : " shards, ")
        << s->tokens() << " tokens, " << s->size() << " examples (windows of seq_len + 1 = " << options_.seq_len + 1
        << " tokens, stride " << options_.stride << ")";
  }
  return out.str();
}

}  // namespace tessera::token_shards

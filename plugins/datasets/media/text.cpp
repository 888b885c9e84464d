// media/text.cpp — select_text, the byte tokenizer, and SentencePiece through its shim library.
#include "media/text.hpp"

#include <dlfcn.h>

#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <type_traits>

namespace tessera::media {
namespace {

constexpr const char* kShimName = "libtessera_sentencepiece.so";

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

// libsentencepiece through sentencepiece_shim.cpp's C API (see there why it is opened apart).
struct Shim {
  void* (*load)(const char*, char**);
  void (*free_model)(void*);
  void (*free_string)(char*);
  int (*piece_size)(const void*);
  int (*pad_id)(const void*);
  int (*encode)(const void*, const char*, size_t, int**, size_t*, char**);
  int (*decode)(const void*, const int*, size_t, char**, size_t*, char**);
};

// Beside the module this code was linked into (a plugin in plugins/: plugins/support/), or for an
// executable in bin/: ../plugins/support/; the build tree's copy last.
std::vector<std::string> shim_candidates() {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  Dl_info info{};
  std::error_code ec;
  fs::path self;
  if (dladdr(reinterpret_cast<void*>(&shim_candidates), &info) && info.dli_fname && std::strchr(info.dli_fname, '/'))
    self = fs::canonical(info.dli_fname, ec);
  if (self.empty()) self = fs::read_symlink("/proc/self/exe", ec);
  const fs::path dir = self.parent_path();
  for (const fs::path& d : {dir / "support", dir / ".." / "plugins" / "support", dir / ".." / "lib" / "tessera" / "plugins" / "support"})
    out.push_back((d / kShimName).string());
#ifdef TESSERA_SENTENCEPIECE_SHIM
  out.emplace_back(TESSERA_SENTENCEPIECE_SHIM);
#endif
  return out;
}

const Shim& shim() {
  static const Shim s = [] {
    std::string tried;
    for (const std::string& path : shim_candidates()) {
      void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (!h) {
        tried += "\n  " + path + ": " + ::dlerror();
        continue;
      }
      Shim out{};
      auto sym = [&](auto& fn, const char* name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(h, name));
        if (!fn) throw std::runtime_error(path + " lacks " + name);
      };
      sym(out.load, "tsr_spm_load");
      sym(out.free_model, "tsr_spm_free");
      sym(out.free_string, "tsr_spm_free_string");
      sym(out.piece_size, "tsr_spm_piece_size");
      sym(out.pad_id, "tsr_spm_pad_id");
      sym(out.encode, "tsr_spm_encode");
      sym(out.decode, "tsr_spm_decode");
      return out;  // stays loaded for the life of the process
    }
    throw std::runtime_error(std::string("SentencePiece support (") + kShimName + ") not found; tried:" + tried);
  }();
  return s;
}

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : shim_(shim()) {
    char* error = nullptr;
    model_ = shim_.load(path.c_str(), &error);
    if (!model_) {
      const std::string why = error ? error : "unknown error";
      shim_.free_string(error);
      throw std::runtime_error("tokenizer model '" + path + "' does not load: " + why);
    }
    pieces_ = shim_.piece_size(model_);
    pad_ = shim_.pad_id(model_);
  }
  ~SentencePieceTokenizer() override { shim_.free_model(model_); }
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int64_t> encode(const std::string& text) const override {
    int* ids = nullptr;
    size_t n = 0;
    char* error = nullptr;
    if (shim_.encode(model_, text.data(), text.size(), &ids, &n, &error) != 0) fail("encode", error);
    std::vector<int64_t> out(ids, ids + n);
    shim_.free_string(reinterpret_cast<char*>(ids));
    return out;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int> narrow;
    for (int64_t id : ids) {
      if (id < 0 || id >= pieces_)
        throw std::invalid_argument("token id " + std::to_string(id) + " is outside the model's " + std::to_string(pieces_) +
                                    " pieces");
      narrow.push_back(static_cast<int>(id));
    }
    char* text = nullptr;
    size_t size = 0;
    char* error = nullptr;
    if (shim_.decode(model_, narrow.data(), narrow.size(), &text, &size, &error) != 0) fail("decode", error);
    std::string out(text, size);
    shim_.free_string(text);
    return out;
  }
  int64_t pad_id() const override { return pad_ >= 0 ? pad_ : 0; }
  int64_t vocab_size() const override { return pieces_; }

 private:
  [[noreturn]] void fail(const char* what, char* error) const {
    const std::string why = error ? error : "out of memory";
    shim_.free_string(error);
    throw std::runtime_error(std::string("SentencePiece ") + what + " failed: " + why);
  }
  const Shim& shim_;
  void* model_ = nullptr;
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

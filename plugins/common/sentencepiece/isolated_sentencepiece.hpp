// isolated_sentencepiece.hpp — SentencePiece (load, encode, decode, train) behind a small interface,
// living in its own module, tessera_sentencepiece.so, loaded with its own symbol scope.
//
// Why: Debian's libsentencepiece.so.0 carries a private copy of protobuf-lite 3.14 and exports its
// google::protobuf symbols; LibTorch pulls in libprotobuf.so.32 (3.21). In one symbol scope the two
// bind to each other's functions and the process crashes before main (or on the first model load).
// So nothing that links LibTorch links libsentencepiece: only tessera_sentencepiece.so does, and
// sentencepiece() opens it with RTLD_LOCAL | RTLD_DEEPBIND, which makes it and libsentencepiece
// bind their own symbols first. C++ types cross the interface: both sides are this build, with the
// same compiler and the one libstdc++ of the process.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tessera::spm {

constexpr uint32_t kInterfaceVersion = 2;

// One loaded .model. Call it from one thread at a time (SentencePiece does not promise more).
class Model {
 public:
  virtual ~Model() = default;
  virtual int piece_size() const = 0;
  virtual int eos_id() const = 0;  // -1 when the model has none
  virtual int pad_id() const = 0;  // -1 when the model has none
  // Both throw std::runtime_error with SentencePiece's message.
  virtual std::vector<int> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int>& ids) const = 0;  // ids in [0, piece_size)
};

// The training text, one sentence (line) per call.
class LineSource {
 public:
  virtual ~LineSource() = default;
  // False at the end. May throw: training stops and train() throws that message.
  virtual bool next(std::string& line) = 0;
};

class Library {
 public:
  virtual ~Library() = default;
  // Throws std::runtime_error naming the path when the file does not load as a model.
  virtual std::unique_ptr<Model> load(const std::string& model_path) const = 0;
  // SentencePieceTrainer::Train with these flags ({"model_prefix", P}, {"vocab_size", "8192"}, ...,
  // as spm_train takes them) on the sentences of `lines`; the random generator is seeded with
  // `seed` first. Throws std::runtime_error with SentencePiece's message.
  virtual void train(const std::map<std::string, std::string>& flags, LineSource& lines, uint32_t seed) const = 0;
};

// The library, loaded on first use (any thread). It is looked for in lib/tessera/ beside the
// calling binary's bin/ or plugin directory (or at $TESSERA_SENTENCEPIECE_MODULE); a failure is a
// std::runtime_error listing each path tried and why it did not load.
const Library& sentencepiece();

}  // namespace tessera::spm

// The module's one export: its Library, or NULL when `interface_version` is not its own.
extern "C" {
typedef const tessera::spm::Library* (*tessera_sentencepiece_entry_fn)(uint32_t interface_version);
}
#define TESSERA_SENTENCEPIECE_ENTRY "tessera_sentencepiece_library"

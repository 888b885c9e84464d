// sentencepiece_module.cpp — tessera_sentencepiece.so: the Library of isolated_sentencepiece.hpp over
// libsentencepiece's C++ API. The only code that links libsentencepiece (see the header for why).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <exception>
#include <stdexcept>
#include <unordered_map>

#include "isolated_sentencepiece.hpp"

namespace tessera::spm {
namespace {

class SpModel : public Model {
 public:
  explicit SpModel(const std::string& path) {
    const auto status = sp_.Load(path);
    if (!status.ok()) throw std::runtime_error(path + " does not load as a SentencePiece model: " + status.ToString());
  }
  int piece_size() const override { return sp_.GetPieceSize(); }
  int eos_id() const override { return sp_.eos_id(); }
  int pad_id() const override { return sp_.pad_id(); }
  std::vector<int> encode(const std::string& text) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    if (!status.ok()) throw std::runtime_error("SentencePiece cannot encode: " + status.ToString());
    return ids;
  }
  std::string decode(const std::vector<int>& ids) const override {
    std::string text;
    const auto status = sp_.Decode(ids, &text);
    if (!status.ok()) throw std::runtime_error("SentencePiece cannot decode: " + status.ToString());
    return text;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

// The trainer's view of a LineSource; an exception from it ends the sentences and becomes the status.
class Sentences : public sentencepiece::SentenceIterator {
 public:
  explicit Sentences(LineSource& lines) : lines_(lines) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    try {
      done_ = !lines_.next(line_);
    } catch (const std::exception& e) {
      error_ = e.what();
      done_ = true;
    }
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override {
    if (error_.empty()) return sentencepiece::util::Status();
    return sentencepiece::util::Status(sentencepiece::util::StatusCode::kDataLoss, error_);
  }

 private:
  LineSource& lines_;
  std::string line_, error_;
  bool done_ = false;
};

class SpLibrary : public Library {
 public:
  std::unique_ptr<Model> load(const std::string& model_path) const override {
    return std::make_unique<SpModel>(model_path);
  }
  void train(const std::map<std::string, std::string>& flags, LineSource& lines, uint32_t seed) const override {
    sentencepiece::SetRandomGeneratorSeed(seed);
    Sentences sentences(lines);
    const std::unordered_map<std::string, std::string> kwargs(flags.begin(), flags.end());
    const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs, &sentences);
    if (!status.ok()) throw std::runtime_error(status.ToString());
  }
};

}  // namespace
}  // namespace tessera::spm

extern "C" __attribute__((visibility("default"))) const tessera::spm::Library* tessera_sentencepiece_library(
    uint32_t interface_version) {
  static const tessera::spm::SpLibrary library;
  return interface_version == tessera::spm::kInterfaceVersion ? &library : nullptr;
}

// media/sentencepiece_shim.cpp — libsentencepiece behind a small C API, built as its own shared
// library and opened by text.cpp with RTLD_LOCAL | RTLD_DEEPBIND. Why: Debian's libsentencepiece
// carries its own protobuf-lite and exports it; in one lookup scope with LibTorch's libprotobuf
// the two interpose each other and the process crashes (at start-up when an executable links
// both). Deep binding keeps SentencePiece on its own protobuf and out of everyone else's way.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define TSR_SPM_API extern "C" __attribute__((visibility("default")))

namespace {

char* copy(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out) std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

}  // namespace

// A loaded model, or NULL with *error (free with tsr_spm_free_string) saying why.
TSR_SPM_API void* tsr_spm_load(const char* path, char** error) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(path);
  if (!status.ok()) {
    *error = copy(status.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

TSR_SPM_API void tsr_spm_free(void* model) { delete static_cast<sentencepiece::SentencePieceProcessor*>(model); }
TSR_SPM_API void tsr_spm_free_string(char* s) { std::free(s); }

TSR_SPM_API int tsr_spm_piece_size(const void* model) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(model)->GetPieceSize();
}
TSR_SPM_API int tsr_spm_pad_id(const void* model) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(model)->pad_id();
}

// Any thread. *ids: malloc'd (free with tsr_spm_free_string((char*)ids)). 0 on success.
TSR_SPM_API int tsr_spm_encode(const void* model, const char* text, size_t size, int** ids, size_t* n, char** error) {
  std::vector<int> out;
  const auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(model)->Encode(
      absl::string_view(text, size), &out);
  if (!status.ok()) {
    *error = copy(status.ToString());
    return 1;
  }
  *n = out.size();
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.size() + 1)));
  if (!*ids) return 1;
  if (!out.empty()) std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  return 0;
}

// Any thread. *text: malloc'd, NUL-terminated, *size bytes. 0 on success.
TSR_SPM_API int tsr_spm_decode(const void* model, const int* ids, size_t n, char** text, size_t* size, char** error) {
  std::string out;
  const auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(model)->Decode(std::vector<int>(ids, ids + n), &out);
  if (!status.ok()) {
    *error = copy(status.ToString());
    return 1;
  }
  *size = out.size();
  *text = copy(out);
  return *text ? 0 : 1;
}

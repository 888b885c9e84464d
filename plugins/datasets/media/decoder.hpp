// media/decoder.hpp — what the folder and webdataset readers share above the codecs: the decode
// config keys, the fields an example has, and one decode step per field kind, so identical bytes
// give identical tensors whichever reader found them.
#pragma once
#include <tessera/plugin.hpp>

#include <memory>
#include <string>
#include <vector>

#include "media/audio.hpp"
#include "media/bytes.hpp"
#include "media/image.hpp"
#include "media/text.hpp"

namespace tessera::media {

// The decode keys both readers declare (append to a plugin's key array).
#define TESSERA_MEDIA_DECODE_KEYS                                                                          \
  ::tessera::sdk::key_int("image_height", "0",                                                             \
                          "resize images to this height (0 = keep the decoded size; set image_width too)", 0, \
                          16384),                                                                          \
      ::tessera::sdk::key_int("image_width", "0", "resize images to this width (0 = keep the decoded size)", 0, \
                              16384),                                                                      \
      ::tessera::sdk::key_enum("image_resize", "\"stretch\"",                                              \
                               "stretch to the size | crop: cover it, centre crop | pad: fit inside, centred", \
                               "stretch|crop|pad"),                                                        \
      ::tessera::sdk::key_int("channels", "3", "image channels: 1 (grey: ITU-R 601 luma), 3 (RGB), 4 (RGBA)", 1, 4), \
      ::tessera::sdk::key_enum("alpha", "\"drop\"",                                                        \
                               "transparency when channels < 4: drop it (as PIL's convert), or composite over " \
                               "white / black",                                                            \
                               "drop|white|black"),                                                        \
      ::tessera::sdk::key_string("normalize_mean", "\"\"",                                                 \
                                 "subtracted from pixels in [0, 1]: one value or one per channel, e.g. "   \
                                 "\"0.481 0.458 0.408\"; empty = none"),                                  \
      ::tessera::sdk::key_string("normalize_std", "\"\"",                                                  \
                                 "then divided by: one value or one per channel; empty = none"),          \
      ::tessera::sdk::key_enum("text_lines", "\"all\"",                                                    \
                               "first: the first line only (Tux Paint's English caption) | all: the whole text", \
                               "first|all"),                                                               \
      ::tessera::sdk::key_string("tokenizer", "\"bytes\"",                                                 \
                                 "bytes (id = byte + 1, 0 = padding) or the path of a SentencePiece .model"), \
      ::tessera::sdk::key_int("text_max_len", "0", "keep at most this many token ids (0 = all)", 0, 1e9),  \
      ::tessera::sdk::key_int("sample_rate", "16000",                                                      \
                              "resample audio to this rate in Hz (libsamplerate sinc); 0 = keep each file's", 0, \
                              768000),                                                                     \
      ::tessera::sdk::key_float("max_seconds", "0", "keep at most this many seconds of audio (0 = all)", 0, 1e6)

enum class Kind { Image, Text, Audio, Label, Array };

// One field a reader serves.
struct FieldSpec {
  std::string name;    // the batch tensor's name: "image", "text", "audio", "label", ...
  Kind kind;
  std::string source;  // the reader's own: a file-name pattern, or tar member extensions
  bool required = false;
};

// The candidates whose source is not empty, in their order, marked required as `required`
// names them (labels and arrays are always required: a scalar cannot be absent). Throws
// std::invalid_argument when `required` names an unknown field or one without a source.
std::vector<FieldSpec> plan_fields(std::vector<FieldSpec> candidates, const std::vector<std::string>& required);

struct DecodeOptions {
  ImageOptions image;
  std::string text_lines = "all";
  std::string tokenizer = "bytes";
  int64_t text_max_len = 0;
  AudioOptions audio;
};

// The TESSERA_MEDIA_DECODE_KEYS of a plugin's config (throws sdk::Error for bad values).
DecodeOptions read_decode_options(const sdk::Host& host);

// "0.5", "0.481 0.458 0.408", "0.5, 0.5" -> values; throws std::invalid_argument naming `key`.
std::vector<double> parse_floats(const std::string& text, const std::string& key);

class MediaDecoder {
 public:
  // Loads the tokenizer (its error names the model file).
  explicit MediaDecoder(DecodeOptions options);
  const DecodeOptions& options() const { return options_; }

  // How the field is declared: image f32 (C, H, W) — (C, -1, -1) without a size or when optional
  // (an absent one is (C, 0, 0)); text i64 (-1), padded with the tokenizer's pad id; audio f32
  // (-1); label i64 (). Not for Kind::Array (the reader knows its shape).
  sdk::Field field(const FieldSpec& spec) const;
  // Bytes of one file / member -> the field's tensor. `source` names the file in errors.
  at::Tensor decode(const FieldSpec& spec, const Bytes& bytes, const std::string& source) const;
  // An absent optional field: (C, 0, 0) image, (0) text or audio.
  at::Tensor missing(const FieldSpec& spec) const;

  at::Tensor encode_text(const std::string& text) const;  // (n,) i64, truncated like a field
  std::string decode_text(const at::Tensor& ids) const;
  const Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  DecodeOptions options_;
  std::shared_ptr<const Tokenizer> tokenizer_;
};

}  // namespace tessera::media

// media/decoder.cpp — plan_fields, the decode options from a plugin's config, MediaDecoder.
#include "media/decoder.hpp"

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <stdexcept>

namespace tessera::media {

std::vector<FieldSpec> plan_fields(std::vector<FieldSpec> candidates, const std::vector<std::string>& required) {
  for (const std::string& r : required) {
    bool known = false;
    for (FieldSpec& f : candidates) {
      if (f.name != r) continue;
      known = true;
      if (f.source.empty())
        throw std::invalid_argument("required field '" + r + "' has no source (set its key '" + r + "')");
      f.required = true;
    }
    if (!known) {
      std::string names;
      for (const FieldSpec& f : candidates) names += (names.empty() ? "" : ", ") + f.name;
      throw std::invalid_argument("required names '" + r + "', which is not a field (fields: " + names + ")");
    }
  }
  std::vector<FieldSpec> out;
  for (FieldSpec& f : candidates) {
    if (f.source.empty()) continue;
    if (f.kind == Kind::Label || f.kind == Kind::Array) f.required = true;
    out.push_back(std::move(f));
  }
  if (out.empty()) throw std::invalid_argument("no field has a source: set at least one of the field keys");
  return out;
}

std::vector<double> parse_floats(const std::string& text, const std::string& key) {
  std::vector<double> out;
  const char* p = text.c_str();
  while (*p) {
    if (*p == ' ' || *p == ',' || *p == '\t') {
      ++p;
      continue;
    }
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(p, &end);
    if (end == p || errno != 0) throw std::invalid_argument(key + " = \"" + text + "\": not a list of numbers");
    out.push_back(v);
    p = end;
  }
  return out;
}

DecodeOptions read_decode_options(const sdk::Host& host) {
  DecodeOptions o;
  o.image.height = host.get_int("image_height");
  o.image.width = host.get_int("image_width");
  o.image.resize = host.get_string("image_resize");
  o.image.channels = host.get_int("channels");
  o.image.alpha = host.get_string("alpha");
  try {
    o.image.mean = parse_floats(host.get_string("normalize_mean"), "normalize_mean");
    o.image.stddev = parse_floats(host.get_string("normalize_std"), "normalize_std");
    validate(o.image);
  } catch (const std::invalid_argument& e) {
    throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, e.what());
  }
  o.text_lines = host.get_string("text_lines");
  o.tokenizer = host.get_string("tokenizer");
  o.text_max_len = host.get_int("text_max_len");
  o.audio.sample_rate = host.get_int("sample_rate");
  o.audio.max_seconds = host.get_float("max_seconds");
  return o;
}

MediaDecoder::MediaDecoder(DecodeOptions options)
    : options_(std::move(options)), tokenizer_(Tokenizer::open(options_.tokenizer)) {
  validate(options_.image);
}

sdk::Field MediaDecoder::field(const FieldSpec& spec) const {
  const ImageOptions& im = options_.image;
  switch (spec.kind) {
    case Kind::Image: {
      const bool fixed = im.height > 0 && spec.required;
      return {spec.name, TSR_DTYPE_F32, {im.channels, fixed ? im.height : -1, fixed ? im.width : -1}, 0.0,
              "(C, H, W) f32 pixels from '" + spec.source + "'" + (spec.required ? "" : "; absent: (C, 0, 0)")};
    }
    case Kind::Text:
      return {spec.name, TSR_DTYPE_I64, {-1}, static_cast<double>(tokenizer_->pad_id()),
              "(n,) i64 token ids of '" + spec.source + "' (" + options_.tokenizer + ")"};
    case Kind::Audio:
      return {spec.name, TSR_DTYPE_F32, {-1}, 0.0, "(n,) f32 mono samples of '" + spec.source + "'"};
    case Kind::Label:
      return {spec.name, TSR_DTYPE_I64, {}, 0.0, "() i64 class label"};
    case Kind::Array:
      break;
  }
  throw std::logic_error("MediaDecoder::field: an array field's shape is the reader's");
}

at::Tensor MediaDecoder::decode(const FieldSpec& spec, const Bytes& bytes, const std::string& source) const {
  switch (spec.kind) {
    case Kind::Image:
      return image_tensor(decode_image(bytes.data(), bytes.size(), source), options_.image);
    case Kind::Text:
      return encode_text(select_text(bytes.data(), bytes.size(), options_.text_lines));
    case Kind::Audio:
      return audio_tensor(decode_audio(bytes.data(), bytes.size(), source), options_.audio, source);
    case Kind::Label: {
      std::string s(bytes.begin(), bytes.end());
      const size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
      s = b == std::string::npos ? "" : s.substr(b, e - b + 1);
      int64_t v = 0;
      const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (s.empty() || ec != std::errc() || ptr != s.data() + s.size())
        throw std::runtime_error(source + ": not an integer class label: '" + s.substr(0, 40) + "'");
      return at::scalar_tensor(v, at::kLong);
    }
    case Kind::Array:
      break;
  }
  throw std::logic_error("MediaDecoder::decode: an array field is the reader's");
}

at::Tensor MediaDecoder::missing(const FieldSpec& spec) const {
  switch (spec.kind) {
    case Kind::Image: return at::empty({options_.image.channels, 0, 0}, at::kFloat);
    case Kind::Text: return at::empty({0}, at::kLong);
    case Kind::Audio: return at::empty({0}, at::kFloat);
    default: throw std::logic_error("field '" + spec.name + "' cannot be absent");
  }
}

at::Tensor MediaDecoder::encode_text(const std::string& text) const {
  std::vector<int64_t> ids = tokenizer_->encode(text);
  if (options_.text_max_len > 0 && static_cast<int64_t>(ids.size()) > options_.text_max_len)
    ids.resize(static_cast<size_t>(options_.text_max_len));
  return at::tensor(ids, at::kLong);
}

std::string MediaDecoder::decode_text(const at::Tensor& ids) const {
  at::Tensor flat = ids.to(at::kCPU, at::kLong).contiguous().flatten();
  const int64_t* p = flat.data_ptr<int64_t>();
  return tokenizer_->decode(std::vector<int64_t>(p, p + flat.numel()));
}

}  // namespace tessera::media

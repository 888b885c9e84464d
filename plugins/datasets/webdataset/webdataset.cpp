// webdataset/webdataset.cpp — the "webdataset" dataset plugin: WebDataset tar shards (OpenCLIP /
// LAION's format), indexed once at create, each member read by offset (pread) and decoded per get
// with the same decoders as the folder plugin.
#include <tessera/plugin.hpp>

#include <fstream>
#include <stdexcept>

#include "media/media_dataset.hpp"
#include "webdataset/npy.hpp"
#include "webdataset/tar_index.hpp"

namespace {

using namespace tessera;

constexpr tsr_config_key kKeys[] = {
    sdk::key_string("root", "\"\"", "directory the shard patterns and class_names are relative to (\"\" = as written)"),
    sdk::key_string("train", "\"\"",
                    "shards of the 'train' split: a path with {000..099} ranges, {a,b} lists and glob "
                    "wildcards, e.g. \"shards/train-{000000..000009}.tar\"; uncompressed tar; \"\" = no such split"),
    sdk::key_string("val", "\"\"", "shards of the 'val' split (as train)"),
    sdk::key_string("test", "\"\"", "shards of the 'test' split (as train)"),
    sdk::key_string("image", "\"jpg|jpeg|png\"",
                    "member extensions of a sample's image, '|' between alternatives (the first present "
                    "wins); \"\" = no image field"),
    sdk::key_string("text", "\"txt\"", "member extension(s) of its text; \"\" = no text field"),
    sdk::key_string("audio", "\"\"", "member extension(s) of its audio, e.g. \"flac|wav|ogg\"; \"\" = no audio field"),
    sdk::key_string("label", "\"\"",
                    "member extension of its integer class label, e.g. \"cls\": a 'label' i64 field (a sample "
                    "without it is skipped); \"\" = none"),
    sdk::key_string("npy", "\"\"",
                    "member extension of a NumPy array, e.g. \"npy\": an 'npy' field of the first sample's dtype "
                    "and shape (a sample without it is skipped); \"\" = none"),
    sdk::key_string("npy_shape", "\"\"",
                    "the npy field's declared shape, e.g. \"-1 80\" (-1 = varies; the loader pads it); \"\" = the "
                    "first sample's"),
    sdk::key_strings("required", "[\"image\"]",
                     "fields a sample must have (others may be absent: an empty tensor, length 0); a sample "
                     "without one is skipped, counted in one warning"),
    sdk::key_string("class_names", "\"\"",
                    "a text file with one class name per line, in label order (pack_webdataset writes "
                    "classes.txt); \"\" = none"),
    TESSERA_MEDIA_DECODE_KEYS,
};

class WebDataset : public media::MediaDataset {
 public:
  explicit WebDataset(const sdk::Host& host) : MediaDataset(host) {
    const std::string root = host.get_string("root");
    try {
      field_specs_ = media::plan_fields({{"image", media::Kind::Image, host.get_string("image")},
                                         {"text", media::Kind::Text, host.get_string("text")},
                                         {"audio", media::Kind::Audio, host.get_string("audio")},
                                         {"npy", media::Kind::Array, host.get_string("npy")},
                                         {"label", media::Kind::Label, host.get_string("label")}},
                                        host.get_strings("required"));
      scan_ = webdataset::scan_webdataset(
          {{"train", host.get_string("train")}, {"val", host.get_string("val")}, {"test", host.get_string("test")}},
          root, field_specs_);
    } catch (const std::invalid_argument& e) {
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, e.what());
    }
    for (size_t f = 0; f < field_specs_.size(); ++f)
      if (field_specs_[f].kind == media::Kind::Array) declare_array(f, host.get_string("npy_shape"));
    if (const std::string names = host.get_string("class_names"); !names.empty()) {
      const std::string path = names[0] == '/' || root.empty() ? names : root + "/" + names;
      std::ifstream in(path);
      if (!in) throw sdk::Error(TSR_ERR_NOT_FOUND, "class_names: cannot read '" + path + "'");
      for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) class_names_.push_back(line);
      }
    }
    for (const std::string& w : scan_.warnings) host.warn("webdataset: " + w);
    std::string sizes;
    for (const auto& s : scan_.splits) sizes += " " + s.name + "=" + std::to_string(s.samples.size());
    host.info("webdataset: " + std::to_string(scan_.shards.size()) + " shards," + sizes + ", " +
              std::to_string(scan_.skipped) + " samples skipped");
  }

  std::vector<sdk::Split> splits() override {
    std::vector<sdk::Split> out;
    for (const auto& s : scan_.splits) out.push_back({s.name, static_cast<int64_t>(s.samples.size())});
    return out;
  }

  void get(const sdk::Request& req, sdk::TensorSet& out) override {
    const webdataset::WdsSample& s = pick(scan_.splits, &webdataset::WdsSplit::samples, req);
    const std::string& shard = scan_.shards[static_cast<size_t>(s.shard)];
    const auto& members = scan_.members[static_cast<size_t>(s.shard)];
    for (size_t f = 0; f < field_specs_.size(); ++f) {
      const media::FieldSpec& spec = field_specs_[f];
      if (s.members[f] < 0) {
        out.put(spec.name, decoder_->missing(spec));
        continue;
      }
      const webdataset::TarMember& m = members[static_cast<size_t>(s.members[f])];
      const std::string source = shard + ":" + m.name;
      const media::Bytes bytes = media::read_range(shard, m.offset, m.size, m.name);
      out.put(spec.name, spec.kind == media::Kind::Array ? array(bytes, source) : decoder_->decode(spec, bytes, source));
    }
  }

 private:
  sdk::Field array_field(const media::FieldSpec& spec) override {
    return {spec.name, array_dtype_, array_shape_, 0.0, "NumPy array from ." + spec.source + " members"};
  }

  // The npy field's dtype and shape: the first sample's, or npy_shape's sizes.
  void declare_array(size_t f, const std::string& shape_text) {
    for (const auto& split : scan_.splits) {
      if (split.samples.empty()) continue;
      const webdataset::WdsSample& s = split.samples.front();
      const std::string& shard = scan_.shards[static_cast<size_t>(s.shard)];
      const webdataset::TarMember& m = scan_.members[static_cast<size_t>(s.shard)][static_cast<size_t>(s.members[f])];
      const media::Bytes bytes = media::read_range(shard, m.offset, m.size, m.name);
      const webdataset::NpyHeader h = webdataset::parse_npy_header(bytes.data(), bytes.size(), shard + ":" + m.name);
      array_dtype_ = h.dtype == at::kFloat ? TSR_DTYPE_F32 : h.dtype == at::kDouble ? TSR_DTYPE_F64
                   : h.dtype == at::kLong ? TSR_DTYPE_I64 : h.dtype == at::kInt ? TSR_DTYPE_I32 : TSR_DTYPE_U8;
      array_scalar_ = h.dtype;
      array_shape_ = h.shape;
      break;
    }
    if (shape_text.empty()) return;
    std::vector<int64_t> shape;
    try {
      for (double d : media::parse_floats(shape_text, "npy_shape")) {
        if (d != static_cast<double>(static_cast<int64_t>(d)) || (d < 1 && d != -1)) throw std::invalid_argument("");
        shape.push_back(static_cast<int64_t>(d));
      }
    } catch (const std::invalid_argument&) {
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "npy_shape = \"" + shape_text + "\": sizes > 0 or -1, e.g. \"-1 80\"");
    }
    if (shape.size() != array_shape_.size())
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "npy_shape = \"" + shape_text + "\" has " + std::to_string(shape.size()) +
                                                     " dims, the arrays have " + std::to_string(array_shape_.size()));
    array_shape_ = shape;
  }

  at::Tensor array(const media::Bytes& bytes, const std::string& source) const {
    at::Tensor t = webdataset::decode_npy(bytes.data(), bytes.size(), source);
    bool ok = t.scalar_type() == array_scalar_ && t.dim() == static_cast<int64_t>(array_shape_.size());
    for (size_t d = 0; ok && d < array_shape_.size(); ++d)
      ok = array_shape_[d] < 0 || t.size(static_cast<int64_t>(d)) == array_shape_[d];
    if (!ok) {
      std::string declared;
      for (int64_t d : array_shape_) declared += (declared.empty() ? "" : ", ") + std::to_string(d);
      throw std::runtime_error(source + ": array of " + c10::toString(t.scalar_type()) + " " + c10::str(t.sizes()) +
                               ", the npy field is " + c10::toString(array_scalar_) + " (" + declared + ")");
    }
    return t;
  }

  webdataset::WdsScan scan_;
  int32_t array_dtype_ = TSR_DTYPE_F32;  // the npy field, when there is one
  at::ScalarType array_scalar_ = at::kFloat;
  std::vector<int64_t> array_shape_;
};

}  // namespace

TESSERA_PLUGIN(WebDataset, tessera::sdk::Dataset, "webdataset", "1.0.0",
               "WebDataset tar shards (OpenCLIP / LAION's format): samples grouped by key, members named by "
               "extension (.jpg/.png, .txt, .cls, .wav/.flac/.ogg, .npy), read by offset from uncompressed tars.",
               kKeys)

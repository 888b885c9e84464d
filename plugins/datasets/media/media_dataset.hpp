// media/media_dataset.hpp — the part of a media reader plugin (folder, webdataset) that does not
// depend on where the bytes come from: the decoder, the fields it declares, class names, the
// tokenizer calls, and finding a request's example. A plugin adds its scan, splits() and get().
#pragma once
#include <tessera/plugin.hpp>

#include <memory>
#include <string>
#include <vector>

#include "media/decoder.hpp"

namespace tessera::media {

class MediaDataset : public sdk::Dataset {
 public:
  std::vector<sdk::Field> fields() override {
    std::vector<sdk::Field> out;
    for (const FieldSpec& f : field_specs_) out.push_back(f.kind == Kind::Array ? array_field(f) : decoder_->field(f));
    return out;
  }
  std::vector<std::string> metadata_text(const std::string& name) override {
    if (name == "class_names") return class_names_;
    if (name == "sample_rate") return {std::to_string(decoder_->options().audio.sample_rate)};  // of "audio"
    return {};
  }
  at::Tensor encode_text(const std::string& field, const std::string& text) override {
    text_field(field);
    return decoder_->encode_text(text);
  }
  std::string decode_text(const std::string& field, const at::Tensor& ids) override {
    text_field(field);
    return decoder_->decode_text(ids);
  }

 protected:
  // Reads the decode keys and loads the tokenizer first, so config errors come before a scan.
  explicit MediaDataset(const sdk::Host& host) {
    try {
      decoder_ = std::make_unique<MediaDecoder>(read_decode_options(host));
    } catch (const std::invalid_argument& e) {
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, e.what());
    }
  }
  // How a Kind::Array field is declared (its reader knows the dtype and shape).
  virtual sdk::Field array_field(const FieldSpec& spec) {
    throw sdk::Error(TSR_ERR_UNSUPPORTED, "field '" + spec.name + "': this reader has no arrays");
  }
  const FieldSpec& text_field(const std::string& name) const {
    for (const FieldSpec& f : field_specs_)
      if (f.name == name && f.kind == Kind::Text) return f;
    throw sdk::Error(TSR_ERR_NOT_FOUND, "no text field named '" + name + "'");
  }
  // The example req.index of the split named req.split: (split.*items)[index].
  template <class Split, class Item>
  static const Item& pick(const std::vector<Split>& splits, std::vector<Item> Split::*items, const sdk::Request& req) {
    for (const Split& s : splits) {
      if (s.name != req.split) continue;
      const std::vector<Item>& v = s.*items;
      if (req.index < 0 || req.index >= static_cast<int64_t>(v.size()))
        throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "example " + std::to_string(req.index) + " is outside split '" +
                                                       s.name + "' (" + std::to_string(v.size()) + " examples)");
      return v[static_cast<size_t>(req.index)];
    }
    throw sdk::Error(TSR_ERR_NOT_FOUND, "no split named '" + req.split + "'");
  }

  std::unique_ptr<MediaDecoder> decoder_;  // read-only after create: get is thread-safe
  std::vector<FieldSpec> field_specs_;     // what fields() declares, in order
  std::vector<std::string> class_names_;   // metadata_text "class_names"
};

}  // namespace tessera::media

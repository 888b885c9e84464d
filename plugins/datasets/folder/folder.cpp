// folder/folder.cpp — the "folder" dataset plugin: a directory tree of a user's own images,
// texts and sounds, grouped into examples by file stem (folder_scan.hpp), decoded per get.
#include <tessera/plugin.hpp>

#include <filesystem>
#include <stdexcept>

#include "folder/folder_keys.hpp"
#include "folder/folder_scan.hpp"
#include "media/media_dataset.hpp"

namespace {

using namespace tessera;

class FolderDataset : public media::MediaDataset {
 public:
  explicit FolderDataset(const sdk::Host& host) : MediaDataset(host) {
    try {
      scan_ = folder::scan_folder(folder::folder_options(host));
      std::vector<media::FieldSpec> candidates;
      for (size_t f = 0; f < scan_.fields.size(); ++f) {
        const std::string& name = scan_.fields[f];
        const media::Kind kind = name == "image" ? media::Kind::Image : name == "text" ? media::Kind::Text : media::Kind::Audio;
        candidates.push_back({name, kind, scan_.field_patterns[f]});
      }
      candidates.push_back({"label", media::Kind::Label, scan_.class_names.empty() ? "" : "the folder under root"});
      field_specs_ = media::plan_fields(candidates, host.get_strings("required"));  // scan_.fields' order, then label
    } catch (const std::invalid_argument& e) {
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, e.what());
    }
    class_names_ = scan_.class_names;
    int64_t total = 0;
    std::string sizes;
    for (const auto& s : scan_.splits) {
      total += static_cast<int64_t>(s.examples.size());
      sizes += " " + s.name + "=" + std::to_string(s.examples.size());
    }
    for (const std::string& w : scan_.warnings) host.warn("folder '" + scan_.root + "': " + w);
    host.info("folder '" + scan_.root + "': " + std::to_string(total) + " examples (" + sizes.substr(1) + "), " +
              std::to_string(scan_.skipped) + " skipped, " + std::to_string(scan_.class_names.size()) + " classes");
  }

  std::vector<sdk::Split> splits() override {
    std::vector<sdk::Split> out;
    for (const auto& s : scan_.splits) out.push_back({s.name, static_cast<int64_t>(s.examples.size())});
    return out;
  }

  void get(const sdk::Request& req, sdk::TensorSet& out) override {
    const folder::FolderExample& e = pick(scan_.splits, &folder::FolderSplit::examples, req);
    for (size_t f = 0; f < e.files.size(); ++f) {  // field_specs_[f] is scan_.fields[f]
      const media::FieldSpec& spec = field_specs_[f];
      if (e.files[f].empty()) {
        out.put(spec.name, decoder_->missing(spec));
        continue;
      }
      const std::string path = (std::filesystem::path(scan_.root) / e.files[f]).string();
      out.put(spec.name, decoder_->decode(spec, media::read_file(path), path));
    }
    if (!class_names_.empty()) out.put("label", at::scalar_tensor(e.label, at::kLong));
  }

 private:
  folder::FolderScan scan_;  // examples by split, in key order
};

}  // namespace

TESSERA_PLUGIN(FolderDataset, tessera::sdk::Dataset, "folder", "1.0.0",
               "A directory tree of your own files, one example per file stem: images (PNG, JPEG), texts and "
               "sounds (WAV, FLAC, Ogg), optional class sub-folders (ImageFolder's convention) and splits.",
               tessera::folder::kFolderKeys)

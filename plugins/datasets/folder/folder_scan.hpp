// folder/folder_scan.hpp — a directory tree of a user's own files grouped into examples by file
// stem: the patterns, split and class-folder conventions, and the one scan at create that both
// the folder plugin and tools/pack_webdataset use. No decoding here (and no LibTorch).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tessera::folder {

// One field's file-name pattern: alternatives "{stem}.png|{stem}.jpg", each with exactly one
// {stem} and no '/'. The first alternative present for a stem wins.
struct Pattern {
  std::string text;                                           // as configured
  std::vector<std::pair<std::string, std::string>> parts;     // (before, after) {stem}
  // The stem when `name` matches alternative i (the lowest i that matches), else "".
  std::string match(const std::string& name, size_t* alternative) const;
};
// Throws std::invalid_argument naming the field for a malformed pattern.
Pattern parse_pattern(const std::string& field, const std::string& text);

struct FolderOptions {
  std::string root;
  std::vector<std::pair<std::string, std::string>> patterns;  // (field, pattern); "" = no such field
  std::vector<std::string> required;                         // fields an example must have
  bool class_folders = true;                                 // labels = "subfolder"
  std::vector<std::string> split_folders;                    // [] = one tree, split by val_fraction
  double val_fraction = 0.0;
};

struct FolderExample {
  std::string key;                 // path of the stem relative to root: "animals/birds/blackbird"
  std::vector<std::string> files;  // per field of the scan, relative to root; "" = absent
  int64_t label = -1;              // index into class_names; -1 without class folders
};

struct FolderSplit {
  std::string name;
  std::vector<FolderExample> examples;  // sorted by key (byte order)
};

struct FolderScan {
  std::string root;
  std::vector<std::string> fields;        // the fields with a pattern, in options order
  std::vector<std::string> field_patterns;
  std::vector<FolderSplit> splits;
  std::vector<std::string> class_names;   // sorted; empty without class folders
  int64_t stems = 0;                      // distinct stems that matched some pattern
  int64_t skipped = 0;                    // of those, not served
  std::vector<std::string> warnings;      // one line per reason something was skipped
};

// Scans the tree once (sorted, deterministic; names starting with '.' are ignored). Examples:
//   - with split_folders, the first level under root names the split (other folders skipped);
//   - with class_folders, the next level names the class (ImageFolder's convention); a file
//     above it is skipped;
//   - an example without a required field is skipped;
//   - without split_folders an example is in "val" when hash(key) < val_fraction, else in
//     "train": membership depends only on the example's own path, so it stays put when files
//     are added or removed elsewhere.
// Throws std::runtime_error, naming root or the pattern, for a root that is not a directory, a
// tree without files, a pattern that matches no file, or no examples left.
FolderScan scan_folder(const FolderOptions& options);

// The split position in [0, 1) of an example key (FNV-1a 64 of the key, then a mixer).
double split_position(const std::string& key);

// The options from a plugin's config (tessera::sdk::Host) or a resolved tessera::Section: keys
// root, image, text, audio, required, labels, split_folders, val_fraction.
template <class Config>
FolderOptions folder_options(const Config& c) {
  FolderOptions o;
  o.root = c.get_string("root");
  for (const char* field : {"image", "text", "audio"}) o.patterns.emplace_back(field, c.get_string(field));
  o.required = c.get_strings("required");
  o.class_folders = c.get_string("labels") == "subfolder";
  o.split_folders = c.get_strings("split_folders");
  o.val_fraction = c.get_float("val_fraction");
  return o;
}

}  // namespace tessera::folder

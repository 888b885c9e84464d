// folder/folder_scan.cpp — the pattern matcher and scan_folder over std::filesystem.
#include "folder/folder_scan.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

namespace tessera::folder {
namespace fs = std::filesystem;

std::string Pattern::match(const std::string& name, size_t* alternative) const {
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto& [before, after] = parts[i];
    if (name.size() > before.size() + after.size() && name.compare(0, before.size(), before) == 0 &&
        name.compare(name.size() - after.size(), after.size(), after) == 0) {
      if (alternative) *alternative = i;
      return name.substr(before.size(), name.size() - before.size() - after.size());
    }
  }
  return "";
}

Pattern parse_pattern(const std::string& field, const std::string& text) {
  Pattern p;
  p.text = text;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t bar = std::min(text.find('|', start), text.size());
    const std::string alt = text.substr(start, bar - start);
    const size_t at = alt.find("{stem}");
    if (at == std::string::npos || alt.find("{stem}", at + 1) != std::string::npos || alt.find('/') != std::string::npos)
      throw std::invalid_argument(field + " = \"" + text + "\": each '|'-separated alternative needs exactly one "
                                  "{stem} and no '/' (e.g. \"{stem}.png|{stem}.jpg\")");
    p.parts.emplace_back(alt.substr(0, at), alt.substr(at + 6));
    start = bar + 1;
  }
  return p;
}

double split_position(const std::string& key) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  h ^= h >> 33;  // murmur3's finaliser: FNV's high bits alone are poorly mixed for short keys
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

namespace {

struct Candidate {
  std::vector<std::string> files;
  std::vector<size_t> alternative;  // which alternative each file matched
};

std::vector<std::string> components(const std::string& key) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t slash; (slash = key.find('/', start)) != std::string::npos; start = slash + 1)
    out.push_back(key.substr(start, slash - start));
  out.push_back(key.substr(start));
  return out;
}

// Counts one reason for skipping, remembering the first example of it.
struct SkipReason {
  int64_t count = 0;
  std::string example;
  void add(const std::string& what) {
    if (count++ == 0) example = what;
  }
};

}  // namespace

FolderScan scan_folder(const FolderOptions& o) {
  FolderScan scan;
  scan.root = o.root;
  std::vector<Pattern> patterns;
  for (const auto& [field, text] : o.patterns) {
    if (text.empty()) continue;
    scan.fields.push_back(field);
    scan.field_patterns.push_back(text);
    patterns.push_back(parse_pattern(field, text));
  }
  if (patterns.empty()) throw std::invalid_argument("folder: no field has a pattern (set image, text or audio)");
  std::vector<bool> required(scan.fields.size(), false);
  for (const std::string& r : o.required) {
    const auto it = std::find(scan.fields.begin(), scan.fields.end(), r);
    if (it == scan.fields.end())
      throw std::invalid_argument("folder: required names '" + r + "', which has no pattern");
    required[static_cast<size_t>(it - scan.fields.begin())] = true;
  }
  if (o.val_fraction < 0.0 || o.val_fraction >= 1.0)
    throw std::invalid_argument("folder: val_fraction must be in [0, 1)");
  if (!o.split_folders.empty() && o.val_fraction > 0.0)
    throw std::invalid_argument("folder: split_folders and val_fraction exclude each other");

  std::error_code ec;
  if (!fs::is_directory(o.root, ec)) throw std::runtime_error("folder: root '" + o.root + "' is not a directory");

  // Every regular file, relative to root, sorted: the scan's one source of order.
  std::vector<std::string> files;
  try {
    for (auto it = fs::recursive_directory_iterator(o.root); it != fs::recursive_directory_iterator(); ++it) {
      const std::string name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) files.push_back(it->path().lexically_relative(o.root).generic_string());
    }
  } catch (const fs::filesystem_error& e) {
    throw std::runtime_error("folder: cannot scan '" + e.path1().string() + "': " + e.code().message());
  }
  if (files.empty()) throw std::runtime_error("folder: root '" + o.root + "' holds no files (no examples)");
  std::sort(files.begin(), files.end());

  std::map<std::string, Candidate> candidates;
  std::vector<int64_t> matched(patterns.size(), 0);
  for (const std::string& rel : files) {
    const size_t slash = rel.rfind('/');
    const std::string dir = slash == std::string::npos ? "" : rel.substr(0, slash + 1);
    const std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
    for (size_t f = 0; f < patterns.size(); ++f) {
      size_t alt = 0;
      const std::string stem = patterns[f].match(name, &alt);
      if (stem.empty()) continue;
      ++matched[f];
      Candidate& c = candidates[dir + stem];
      if (c.files.empty()) {
        c.files.resize(patterns.size());
        c.alternative.resize(patterns.size(), 0);
      }
      if (c.files[f].empty() || alt < c.alternative[f]) {
        c.files[f] = rel;
        c.alternative[f] = alt;
      }
    }
  }
  for (size_t f = 0; f < patterns.size(); ++f)
    if (matched[f] == 0)
      throw std::runtime_error("folder: the " + scan.fields[f] + " pattern '" + patterns[f].text +
                               "' matches no file under '" + o.root + "' (" + std::to_string(files.size()) +
                               " files there)");
  scan.stems = static_cast<int64_t>(candidates.size());

  // Which split and class each candidate belongs to, and whether it is complete.
  struct Kept {
    std::string split, cls;
    const std::string* key;
    const Candidate* c;
  };
  std::vector<Kept> kept;
  SkipReason outside_split, above_class, incomplete;
  std::set<std::string> classes;
  for (const auto& [key, c] : candidates) {
    const std::vector<std::string> parts = components(key);
    size_t level = 0;
    Kept k{"", "", &key, &c};
    if (!o.split_folders.empty()) {
      if (parts.size() < 2 ||
          std::find(o.split_folders.begin(), o.split_folders.end(), parts[0]) == o.split_folders.end()) {
        outside_split.add(key);
        continue;
      }
      k.split = parts[level++];
    }
    if (o.class_folders) {
      if (parts.size() < level + 2) {
        above_class.add(key);
        continue;
      }
      k.cls = parts[level];
    }
    bool complete = true;
    for (size_t f = 0; f < patterns.size() && complete; ++f)
      if (required[f] && c.files[f].empty()) {
        complete = false;
        incomplete.add("'" + key + "' has no " + scan.fields[f] + " ('" + patterns[f].text + "')");
      }
    if (!complete) continue;
    if (o.class_folders) classes.insert(k.cls);
    kept.push_back(std::move(k));
  }
  const std::string of = " of " + std::to_string(scan.stems) + " stems";
  if (outside_split.count)
    scan.warnings.push_back("skipped " + std::to_string(outside_split.count) + of + " outside the split folders, e.g. '" +
                            outside_split.example + "'");
  if (above_class.count)
    scan.warnings.push_back("skipped " + std::to_string(above_class.count) + of +
                            " not inside a class folder (labels = \"subfolder\"), e.g. '" + above_class.example + "'");
  if (incomplete.count)
    scan.warnings.push_back("skipped " + std::to_string(incomplete.count) + of + " missing a required field, e.g. " +
                            incomplete.example);
  scan.skipped = outside_split.count + above_class.count + incomplete.count;
  if (kept.empty()) {
    std::string why;
    for (const std::string& w : scan.warnings) why += "; " + w;
    throw std::runtime_error("folder: no examples under '" + o.root + "'" + why);
  }

  scan.class_names.assign(classes.begin(), classes.end());
  if (!o.split_folders.empty()) {
    for (const std::string& s : o.split_folders) scan.splits.push_back({s, {}});
  } else {
    scan.splits.push_back({"train", {}});
    if (o.val_fraction > 0.0) scan.splits.push_back({"val", {}});
  }
  for (const Kept& k : kept) {
    FolderExample e{*k.key, k.c->files, -1};
    if (o.class_folders)
      e.label = std::lower_bound(scan.class_names.begin(), scan.class_names.end(), k.cls) - scan.class_names.begin();
    size_t s = 0;
    if (!o.split_folders.empty())
      s = static_cast<size_t>(std::find(o.split_folders.begin(), o.split_folders.end(), k.split) - o.split_folders.begin());
    else if (o.val_fraction > 0.0 && split_position(*k.key) < o.val_fraction)
      s = 1;
    scan.splits[s].examples.push_back(std::move(e));
  }
  return scan;
}

}  // namespace tessera::folder

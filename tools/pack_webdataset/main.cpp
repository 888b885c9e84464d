// tools/pack_webdataset/main.cpp — packs a folder dataset into WebDataset tar shards: the [data]
// table of a folder config (or --set data.KEY=VALUE alone) resolved as the folder plugin resolves
// it, scanned with its code (folder_scan), written with the original file bytes (pack_folder).
//   pack_webdataset --out DIR [--config FILE.toml] [--shard-size N] [--set data.root=...]...
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "folder/folder_keys.hpp"
#include "folder/folder_scan.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "webdataset/pack.hpp"

namespace {

using namespace tessera;

// Keys of [data] that are the core loader's (see abi.h section 8), not the folder plugin's.
const char* const kCoreDataKeys[] = {"dataset", "batch_size", "eval_batch_size", "train_split", "eval_split",
                                     "train_limit", "test_limit", "shuffle", "drop_last", "workers", "prefetch"};

// [data] validated against the folder plugin's own schema (its defaults filled in); the core's
// keys are accepted with whatever type they hold.
Section folder_section(const Config& cfg) {
  tsr_plugin_descriptor d{};
  d.struct_size = sizeof d;
  d.config_keys = folder::kFolderKeys;
  d.num_config_keys = sizeof folder::kFolderKeys / sizeof folder::kFolderKeys[0];
  Schema schema = read_config_keys(d, "folder");
  const toml::table& data = cfg.table("data");
  if (const toml::node* n = data.get("dataset"); n && n->value_or(std::string()) != "folder")
    throw ConfigError(cfg.position(*n).str() + ": pack_webdataset packs a folder dataset, not '" +
                      n->value_or(std::string("?")) + "'");
  for (const char* k : kCoreDataKeys) {
    const toml::node* n = data.get(k);
    if (!n) continue;
    const ValueType t = n->is_string() ? ValueType::String : n->is_boolean() ? ValueType::Bool
                      : n->is_integer() ? ValueType::Int : n->is_floating_point() ? ValueType::Float : ValueType::StringArray;
    schema.keys.push_back({k, t, std::nullopt, "the core's", 1.0, 0.0, {}});
  }
  return cfg.resolve(data, schema, "[data]");
}

int usage() {
  std::cerr << "usage: pack_webdataset --out DIR [--config FILE.toml] [--shard-size N] [--set data.KEY=VALUE]...\n"
               "Packs the folder dataset that [data] describes into DIR/<split>-NNNNNN.tar (N samples each,\n"
               "default 1000), in the folder plugin's order, with the original file bytes.\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out, config;
  int64_t shard_size = 1000;
  std::vector<std::string> sets;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    if (a == "--out") out = argv[++i];
    else if (a == "--config") config = argv[++i];
    else if (a == "--shard-size") shard_size = std::stoll(argv[++i]);
    else if (a == "--set") sets.emplace_back(argv[++i]);
    else return usage();
  }
  if (out.empty() || shard_size < 1) return usage();
  try {
    const Config cfg = config.empty() ? Config::parse("", "command line", sets) : Config::load(config, sets);
    const folder::FolderScan scan = folder::scan_folder(folder::folder_options(folder_section(cfg)));
    for (const std::string& w : scan.warnings) std::cerr << "warning: " << w << "\n";
    const auto packed = webdataset::pack_folder(scan, out, shard_size);
    std::cout << "packed " << scan.root << " into " << out << " (" << scan.skipped << " of " << scan.stems
              << " stems skipped)\n";
    for (const auto& p : packed)
      std::cout << "  " << p.name << ": " << p.samples << " samples in " << p.shards.size() << " shards\n";
    // The matching webdataset [data] keys: each field's extensions, as packed.
    std::cout << "\n[data]\ndataset = \"webdataset\"\nroot = \"" << out << "\"\n";
    for (const auto& p : packed) {
      if (p.shards.empty()) continue;
      char last[32];
      std::snprintf(last, sizeof last, "%06zu", p.shards.size() - 1);
      std::cout << p.name << " = \"" << p.name << "-{000000.." << last << "}.tar\"\n";
    }
    for (size_t f = 0; f < scan.fields.size(); ++f) {
      std::set<std::string> exts;
      for (const auto& split : scan.splits)
        for (const auto& e : split.examples)
          if (!e.files[f].empty()) {
            std::string ext = e.files[f].substr(e.files[f].rfind('.') + 1);
            for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            exts.insert(ext);
          }
      std::string joined;
      for (const auto& e : exts) joined += (joined.empty() ? "" : "|") + e;
      std::cout << scan.fields[f] << " = \"" << joined << "\"\n";
    }
    if (!scan.class_names.empty()) std::cout << "label = \"cls\"\nclass_names = \"classes.txt\"\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "pack_webdataset: " << e.what() << "\n";
    return 1;
  }
}

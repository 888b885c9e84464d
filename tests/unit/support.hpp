// tests/unit/support.hpp — helpers the test suites share: fresh temporary directories, files
// written and read whole, metrics.jsonl records.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tessera/core/cli.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "paths.hpp"

namespace tessera::test {

namespace fs = std::filesystem;

// `tessera ARGS...` run in this process (run_cli), with what it printed.
struct CliResult {
  int code;
  std::string out, err;
};
inline CliResult cli(std::vector<std::string> args) {
  args.insert(args.begin(), "tessera");
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int code = tessera::run_cli(args);
  return {code, testing::internal::GetCapturedStdout(), testing::internal::GetCapturedStderr()};
}

// An empty directory <tmp>/tessera_<suite>_<tag>_<pid>, removed first if it exists.
inline fs::path temp_dir(const std::string& suite, const std::string& tag) {
  fs::path d = fs::temp_directory_path() / ("tessera_" + suite + "_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Writes `text` to p and returns p as a string (for command lines and Config::load).
inline std::string write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p.string();
}

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The in-tree plugins and the test plugins, scanned once for the whole test binary.
inline tessera::PluginRegistry& plugin_registry() {
  static tessera::PluginRegistry reg;
  static const bool scanned = (reg.scan({TESSERA_PLUGIN_DIR, TESSERA_TEST_PLUGIN_DIR}), true);
  (void)scanned;
  return reg;
}

// Removes a metrics record's wall-clock figures: the only fields two runs of one seed may differ in.
inline void erase_timing(nlohmann::json& r) {
  for (const char* k : {"samples_per_s", "elapsed_s", "data_wait_ms", "step_ms", "time", "rss_peak_mib",
                        "tokens_per_s", "mfu", "cuda_allocated_mib", "cuda_peak_mib"})
    r.erase(k);
}

// Every record of a JSON Lines file (metrics.jsonl) but its header records ("header": true).
inline std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream f(p);
  for (std::string line; std::getline(f, line);) {
    nlohmann::json r = nlohmann::json::parse(line);
    if (!r.value("header", false)) out.push_back(std::move(r));
  }
  return out;
}

}  // namespace tessera::test

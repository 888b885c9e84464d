// isolated_sentencepiece.cpp — finds and opens tessera_sentencepiece.so in its own symbol scope
// (RTLD_DEEPBIND; see isolated_sentencepiece.hpp) and hands out its Library.
#include "isolated_sentencepiece.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace tessera::spm {
namespace {

namespace fs = std::filesystem;

constexpr const char* kModule = "tessera_sentencepiece.so";

// The directory of the binary this code is linked into (a plugin module or an executable).
fs::path this_binary_dir() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&this_binary_dir), &info) && info.dli_fname && *info.dli_fname) {
    std::error_code ec;
    fs::path p = fs::canonical(info.dli_fname, ec);
    if (!ec) return p.parent_path();
  }
  return {};
}

// Build tree and install tree alike: bin/../lib/tessera/ and <lib/tessera>/plugins/../.
std::vector<fs::path> candidates() {
  if (const char* env = std::getenv("TESSERA_SENTENCEPIECE_MODULE"); env && *env) return {env};
  std::vector<fs::path> dirs;
  std::error_code ec;
  for (const fs::path& d : {this_binary_dir(), fs::canonical("/proc/self/exe", ec).parent_path()})
    if (!d.empty()) {
      dirs.push_back(d.parent_path() / "lib" / "tessera" / kModule);
      dirs.push_back(d.parent_path() / kModule);
    }
  std::vector<fs::path> unique;
  for (const auto& p : dirs)
    if (std::find(unique.begin(), unique.end(), p) == unique.end()) unique.push_back(p);
  return unique;
}

const Library* open_library() {
  std::string tried;
  for (const fs::path& path : candidates()) {
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      tried += "\n  " + path.string() + ": no such file";
      continue;
    }
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);  // never closed
    if (!handle) {
      tried += "\n  " + path.string() + ": " + ::dlerror();
      continue;
    }
    auto entry = reinterpret_cast<tessera_sentencepiece_entry_fn>(::dlsym(handle, TESSERA_SENTENCEPIECE_ENTRY));
    const Library* library = entry ? entry(kInterfaceVersion) : nullptr;
    if (library) return library;
    tried += "\n  " + path.string() + (entry ? ": another interface version" : ": no " TESSERA_SENTENCEPIECE_ENTRY);
  }
  throw std::runtime_error(std::string("SentencePiece support (") + kModule + ") did not load; tried:" + tried);
}

}  // namespace

const Library& sentencepiece() {
  static const Library* library = open_library();  // a failure is retried on the next call
  return *library;
}

}  // namespace tessera::spm

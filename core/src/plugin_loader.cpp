// core/src/plugin_loader.cpp — opens plugin libraries and enforces the ABI rules on them;
// the registry that maps plugin names to libraries found on the search path.
#include "tessera/core/plugin_loader.hpp"

#include <dlfcn.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "tessera/core/error.hpp"

namespace fs = std::filesystem;

namespace tessera {
namespace {

// Size of the 1.0 descriptor: everything up to and including `vtable`.
constexpr uint32_t kDescriptorV1Size = sizeof(tsr_plugin_descriptor);

bool is_elf(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  return f.gcount() == 4 && magic[0] == 0x7f && magic[1] == 'E' && magic[2] == 'L' && magic[3] == 'F';
}

std::string str_or(const char* s, const char* fallback = "") { return s ? s : fallback; }

ValueType value_type(int32_t t, const std::string& where) {
  switch (t) {
    case TSR_CONFIG_INT: return ValueType::Int;
    case TSR_CONFIG_FLOAT: return ValueType::Float;
    case TSR_CONFIG_BOOL: return ValueType::Bool;
    case TSR_CONFIG_STRING: return ValueType::String;
    case TSR_CONFIG_STRING_ARRAY: return ValueType::StringArray;
  }
  throw PluginError(where + ": config key declares unknown type " + std::to_string(t));
}

// A 1.0 key ends before allowed_values (56 bytes on LP64).
constexpr uint32_t kConfigKeyV1Size = offsetof(tsr_config_key, allowed_values);

// "a|b|c" -> {"a", "b", "c"}; an empty value is refused.
std::vector<std::string> split_allowed(const char* list, const std::string& where) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string v; std::getline(ss, v, '|');) {
    if (v.empty()) throw PluginError(where + ": allowed values \"" + list + "\" contain an empty value");
    out.push_back(v);
  }
  if (out.empty() || std::string(list).back() == '|')
    throw PluginError(where + ": allowed values \"" + list + "\" contain an empty value");
  return out;
}

std::string major_minor(const std::string& v) {
  auto first = v.find('.');
  auto second = first == std::string::npos ? first : v.find('.', first + 1);
  return v.substr(0, second);
}

}  // namespace

const char* core_torch_version() { return TORCH_VERSION; }

Schema read_config_keys(const tsr_plugin_descriptor& d, const std::string& plugin) {
  Schema schema;
  if (d.num_config_keys == 0) return schema;
  if (!d.config_keys) throw PluginError("plugin " + plugin + ": declares " + std::to_string(d.num_config_keys) +
                                        " config keys but config_keys is NULL");
  // The array has the stride the plugin was built with: 56 bytes for 1.0 keys, 64 for 1.1.
  const uint32_t stride = d.config_keys[0].struct_size;
  if (stride < kConfigKeyV1Size)
    throw PluginError("plugin " + plugin + ": config keys have struct_size " + std::to_string(stride) +
                      ", smaller than ABI 1.0's " + std::to_string(kConfigKeyV1Size) + " bytes");
  const auto* base = reinterpret_cast<const unsigned char*>(d.config_keys);
  for (uint32_t i = 0; i < d.num_config_keys; ++i) {
    const auto* raw = reinterpret_cast<const tsr_config_key*>(base + static_cast<size_t>(i) * stride);
    tsr_config_key k{};  // the fields this core knows; those the plugin's version lacks stay zero
    std::memcpy(&k, raw, std::min<size_t>(stride, sizeof k));
    const std::string key_where = "plugin " + plugin + ": config key #" + std::to_string(i);
    if (k.struct_size != stride)
      throw PluginError(key_where + " has struct_size " + std::to_string(k.struct_size) + ", key #0 has " +
                        std::to_string(stride) + " (all keys of one array must have one size)");
    if (!k.name) throw PluginError(key_where + " has no name");
    KeySpec spec;
    spec.name = k.name;
    const std::string where = "plugin " + plugin + ": key '" + spec.name + "'";
    spec.type = value_type(k.type, where);
    if (k.default_toml) spec.default_toml = std::string(k.default_toml);
    spec.doc = str_or(k.doc);
    spec.min_value = k.min_value;
    spec.max_value = k.max_value;
    if (k.allowed_values) {
      if (spec.type != ValueType::String)
        throw PluginError(where + " is of type " + to_string(spec.type) + " but declares allowed values (string keys only)");
      spec.choices = split_allowed(k.allowed_values, where);
    }
    if (spec.default_toml) {
      // The default must be a value the key itself accepts: parsed, range and allowed values
      // checked by the same validation a config value gets.
      try {
        Config::parse("", "default").resolve(toml::table{}, Schema{{spec}}, "the plugin's schema");
      } catch (const std::exception& e) {
        throw PluginError(where + ": default " + *spec.default_toml + " is invalid: " + e.what());
      }
    }
    schema.keys.push_back(std::move(spec));
  }
  return schema;
}

std::string PluginLibrary::label() const { return "'" + name_ + "' " + version_ + " (" + path_ + ")"; }

std::shared_ptr<PluginLibrary> PluginLibrary::open(const std::string& path) {
  const std::string where = "plugin library " + path;
  if (!fs::exists(path)) throw PluginError(where + ": no such file");
  if (!is_elf(path))
    throw PluginError(where + ": not a shared library (no ELF header); plugins are .so files built against the Tessera SDK");

  std::shared_ptr<PluginLibrary> lib(new PluginLibrary());
  lib->path_ = fs::absolute(path).lexically_normal().string();
  namespace mode = boost::dll::load_mode;
  boost::dll::fs::error_code ec;
  lib->lib_.load(lib->path_, mode::rtld_now | mode::rtld_local, ec);
  if (ec) {
    const char* dl = dlerror();
    throw PluginError(where + ": cannot be loaded: " + (dl ? std::string(dl) : ec.message()));
  }
  if (!lib->lib_.has(TSR_ENTRY_SYMBOL))
    throw PluginError(where + ": not a Tessera plugin: it exports no '" TSR_ENTRY_SYMBOL
                      "' symbol (define it with TESSERA_PLUGIN or export it with TSR_EXPORT)");
  auto entry = lib->lib_.get<const tsr_plugin_descriptor*()>(TSR_ENTRY_SYMBOL);
  const tsr_plugin_descriptor* d = entry();
  if (!d) throw PluginError(where + ": " TSR_ENTRY_SYMBOL "() returned NULL");
  if (d->struct_size < offsetof(tsr_plugin_descriptor, abi_minor) + sizeof(uint32_t))
    throw PluginError(where + ": descriptor too small (struct_size " + std::to_string(d->struct_size) + ")");
  if (d->abi_major != TSR_ABI_MAJOR)
    throw PluginError(where + ": built for Tessera plugin ABI " + std::to_string(d->abi_major) + "." +
                      std::to_string(d->abi_minor) + ", but this core speaks ABI " +
                      std::to_string(TSR_ABI_MAJOR) + "." + std::to_string(TSR_ABI_MINOR) +
                      "; rebuild the plugin against a Tessera SDK " + std::to_string(TSR_ABI_MAJOR) + ".x");
  if (d->struct_size < kDescriptorV1Size)
    throw PluginError(where + ": descriptor struct_size " + std::to_string(d->struct_size) +
                      " is smaller than ABI 1.0's " + std::to_string(kDescriptorV1Size));
  // Copy only the fields this core knows; a newer minor's appended fields are ignored.
  lib->desc_ = *d;
  lib->desc_.struct_size = kDescriptorV1Size;
  if (!d->name || !*d->name) throw PluginError(where + ": descriptor has no name");
  if (!d->kind || !*d->kind) throw PluginError(where + ": descriptor has no kind");
  if (!d->create || !d->destroy) throw PluginError(where + ": descriptor lacks create/destroy");
  if (!d->vtable) throw PluginError(where + ": descriptor has no vtable for kind " + str_or(d->kind));
  lib->name_ = d->name;
  lib->version_ = str_or(d->version, "0");
  lib->kind_ = d->kind;
  lib->description_ = str_or(d->description);
  lib->torch_version_ = str_or(d->torch_version);
  if (!lib->torch_version_.empty() && major_minor(lib->torch_version_) != major_minor(TORCH_VERSION))
    throw PluginError(where + ": built against LibTorch " + lib->torch_version_ + ", but this core uses LibTorch " +
                      TORCH_VERSION + "; a plugin that uses LibTorch must be built against the same major.minor");
  if (d->abi_minor > TSR_ABI_MINOR)
    spdlog::debug("{}: built for ABI {}.{}, core knows {}.{}; newer fields are ignored", lib->path_,
                  d->abi_major, d->abi_minor, TSR_ABI_MAJOR, TSR_ABI_MINOR);

  lib->schema_ = read_config_keys(*d, lib->label());
  return lib;
}

std::vector<std::string> PluginRegistry::default_search_path(const std::vector<std::string>& from_config) {
  std::vector<std::string> dirs = from_config;
  if (const char* env = std::getenv("TESSERA_PLUGIN_PATH")) {
    std::stringstream ss(env);
    for (std::string d; std::getline(ss, d, ':');)
      if (!d.empty()) dirs.push_back(d);
  }
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const char* rel : {"../plugins", "../lib/tessera/plugins"}) {
      fs::path p = (exe.parent_path() / rel).lexically_normal();
      if (fs::is_directory(p)) dirs.push_back(p.string());
    }
  }
  return dirs;
}

void PluginRegistry::scan(const std::vector<std::string>& dirs) {
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      spdlog::debug("plugin search directory {} does not exist", dir);
      continue;
    }
    searched_.push_back(dir);
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.is_regular_file() && e.path().extension() == ".so") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      std::shared_ptr<PluginLibrary> lib;
      try {
        lib = PluginLibrary::open(f.string());
      } catch (const PluginError& e) {
        failures_.push_back({f.string(), e.what()});
        continue;
      }
      // Earlier directories override later ones (a user's build of `convnet` before the
      // installed one); within one directory two of a name stay an error (add()).
      const auto earlier = std::find_if(plugins_.begin(), plugins_.end(), [&](const auto& p) {
        return p->name() == lib->name() && p->path() != lib->path() && fs::path(p->path()).parent_path() != f.parent_path();
      });
      if (earlier != plugins_.end()) {
        spdlog::info("plugin '{}': using {} (earlier on the search path); {} is overridden", lib->name(),
                     (*earlier)->path(), lib->path());
        overridden_.push_back(lib->path());
        continue;
      }
      add(std::move(lib));
    }
  }
}

void PluginRegistry::add(std::shared_ptr<PluginLibrary> lib) {
  for (const auto& p : plugins_) {
    if (p->path() == lib->path()) return;  // the same file found twice on the path
    if (p->name() == lib->name())
      throw PluginError("two plugins are named '" + lib->name() + "': " + p->path() + " and " + lib->path() +
                        "; remove one from the plugin search path");
  }
  plugins_.push_back(std::move(lib));
}

std::shared_ptr<PluginLibrary> PluginRegistry::get(const std::string& name, const std::string& kind,
                                                   const std::string& slot) const {
  for (const auto& p : plugins_) {
    if (p->name() != name) continue;
    if (p->kind() != kind)
      throw PluginError(slot + ": plugin " + p->label() + " is of kind '" + p->kind() + "', but this slot needs '" +
                        kind + "'");
    return p;
  }
  std::vector<std::string> same_kind;
  for (const auto& p : plugins_)
    if (p->kind() == kind) same_kind.push_back(p->name());
  std::string msg = slot + ": no plugin named '" + name + "' of kind '" + kind + "'";
  std::string near = nearest(name, same_kind);
  if (!near.empty()) msg += "; did you mean '" + near + "'?";
  msg += same_kind.empty() ? std::string("; none of that kind was found") : "; available: ";
  for (size_t i = 0; i < same_kind.size(); ++i) msg += (i ? ", " : "") + same_kind[i];
  msg += ". Searched: ";
  for (size_t i = 0; i < searched_.size(); ++i) msg += (i ? ":" : "") + searched_[i];
  if (searched_.empty()) msg += "(no existing directory; set TESSERA_PLUGIN_PATH or [experiment] plugin_path)";
  for (const auto& f : failures_) msg += "\n  not loaded: " + f.reason;
  throw PluginError(msg);
}

}  // namespace tessera

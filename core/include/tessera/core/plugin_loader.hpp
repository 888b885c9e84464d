// tessera/core/plugin_loader.hpp — loading plugin libraries (Boost.DLL) and the registry.
// Every check of the ABI rules happens here; each failure is a PluginError naming the file.
#pragma once
#include <tessera/abi.h>

#include <boost/dll/shared_library.hpp>

#include <memory>
#include <string>
#include <vector>

#include "tessera/core/config.hpp"

namespace tessera {

// One opened plugin library and what its descriptor says. Shared by every instance,
// tensor and deleter that came from it, so it is unloaded only after the last of them.
class PluginLibrary {
 public:
  // Opens `path` with RTLD_NOW | RTLD_LOCAL, calls the entry, checks the descriptor.
  static std::shared_ptr<PluginLibrary> open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::string& name() const { return name_; }
  const std::string& version() const { return version_; }
  const std::string& kind() const { return kind_; }
  const std::string& description() const { return description_; }
  const std::string& torch_version() const { return torch_version_; }  // "" when none
  uint32_t abi_major() const { return desc_.abi_major; }
  uint32_t abi_minor() const { return desc_.abi_minor; }
  // The config keys the plugin declares, as a schema the config validator understands.
  const Schema& schema() const { return schema_; }
  // The descriptor's fields known to this core (unknown newer fields are not copied).
  const tsr_plugin_descriptor& descriptor() const { return desc_; }
  // "mlp 1.0.0 (path)" — how messages name a plugin.
  std::string label() const;

 private:
  PluginLibrary() = default;
  boost::dll::shared_library lib_;
  tsr_plugin_descriptor desc_{};
  std::string path_, name_, version_, kind_, description_, torch_version_;
  Schema schema_;
};

// All plugins found on a search path, by name. Rejects two libraries with one name.
class PluginRegistry {
 public:
  // Directories from, in order: the config's list, then TESSERA_PLUGIN_PATH (':'-separated),
  // then the directory beside the running executable (bin/../plugins, bin/../lib/tessera/plugins).
  static std::vector<std::string> default_search_path(const std::vector<std::string>& from_config);

  // Loads every shared library (*.so) in the directories. A library that fails to load is
  // remembered (failures()) and reported if a plugin of the name is asked for. The order is an
  // override order: a plugin in an earlier directory hides a same-named one in a later
  // directory (logged, naming both files); two plugins of one name in ONE directory are an
  // error at once.
  void scan(const std::vector<std::string>& dirs);
  // Adds one library (e.g. an explicit path). Throws PluginError on a duplicate name.
  void add(std::shared_ptr<PluginLibrary> lib);

  // The plugin called `name`, checked to be of `kind`. `slot` says where it was asked for
  // ("[[encoder]] #1 at fashion_mnist.toml:20:10"). Unknown names list the available ones.
  std::shared_ptr<PluginLibrary> get(const std::string& name, const std::string& kind,
                                     const std::string& slot) const;
  const std::vector<std::shared_ptr<PluginLibrary>>& plugins() const { return plugins_; }
  struct Failure {
    std::string path, reason;
  };
  const std::vector<Failure>& failures() const { return failures_; }
  const std::vector<std::string>& searched() const { return searched_; }
  const std::vector<std::string>& overridden() const { return overridden_; }

 private:
  std::vector<std::shared_ptr<PluginLibrary>> plugins_;
  std::vector<Failure> failures_;
  std::vector<std::string> searched_;
  std::vector<std::string> overridden_;  // files hidden by a same-named plugin earlier on the path
};

// The descriptor's config keys as a schema. Reads key i at byte offset i * keys[0].struct_size
// (1.0 keys: 56 bytes, no allowed_values); refuses, naming `plugin` and the key, a struct_size
// below 1.0's, keys of different sizes, an unknown type, allowed values on a non-string key, and
// a default that does not parse or lies outside the key's range / allowed values.
Schema read_config_keys(const tsr_plugin_descriptor& d, const std::string& plugin);

// The LibTorch version this core was built with, "major.minor.patch".
const char* core_torch_version();

}  // namespace tessera

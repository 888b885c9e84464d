// tests/unit/paths.cpp — the build's paths, from the definitions tests/CMakeLists.txt gives this
// file alone (see paths.hpp).
#include "paths.hpp"

namespace tessera::test {
const std::string& cli_path() { static const std::string p = TESSERA_PATH_CLI; return p; }
const std::string& disagg_worker_path() { static const std::string p = TESSERA_PATH_DISAGG_WORKER; return p; }
const std::string& plugin_dir() { static const std::string p = TESSERA_PATH_PLUGIN_DIR; return p; }
const std::string& test_plugin_dir() { static const std::string p = TESSERA_PATH_TEST_PLUGIN_DIR; return p; }
const std::string& source_dir() { static const std::string p = TESSERA_PATH_SOURCE_DIR; return p; }
const std::string& test_data_dir() { static const std::string p = TESSERA_PATH_TEST_DATA_DIR; return p; }
}  // namespace tessera::test

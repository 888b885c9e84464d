// tests/unit/paths.hpp — where this build put the CLI, the plugins and the test data.
// The paths are compiled into paths.cpp alone. A path in a -D of every test source would
// make each of them miss ccache in a fresh clone (a new directory is a new command line).
// Kept out of the definitions, the other sources compile identically in any clone.
#pragma once

#include <string>

namespace tessera::test {
const std::string& cli_path();             // build/bin/tessera
const std::string& disagg_worker_path();   // build/bin/tessera_disagg_worker
const std::string& plugin_dir();           // the in-tree plugins: build/plugins
const std::string& test_plugin_dir();      // the test-only plugins: build/tests/plugins
const std::string& source_dir();           // the source tree's root
const std::string& test_data_dir();        // tests/data
}  // namespace tessera::test

#define TESSERA_CLI (::tessera::test::cli_path())
#define TESSERA_DISAGG_WORKER (::tessera::test::disagg_worker_path())
#define TESSERA_PLUGIN_DIR (::tessera::test::plugin_dir())
#define TESSERA_TEST_PLUGIN_DIR (::tessera::test::test_plugin_dir())
#define TESSERA_SOURCE_DIR (::tessera::test::source_dir())
#define TESSERA_TEST_DATA_DIR (::tessera::test::test_data_dir())

// tessera/core/cli.hpp — the `tessera` command line (train, check, plugins, plugins inspect).
// Lives in core so it is testable; tools/tessera/main.cpp only calls run_cli.
#pragma once
#include <string>
#include <vector>

namespace tessera {

// Runs one command; returns the process exit code (0 ok, 1 error, 2 usage). Errors are
// printed to stderr as "error: <message>".
int run_cli(const std::vector<std::string>& args);

}  // namespace tessera

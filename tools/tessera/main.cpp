// tools/tessera/main.cpp — the `tessera` executable: hands its arguments to the core's CLI.
// Thin by design: parsing, building, training and reporting all live in core/.
#include <string>
#include <vector>

#include "tessera/core/cli.hpp"

int main(int argc, char** argv) { return tessera::run_cli(std::vector<std::string>(argv, argv + argc)); }

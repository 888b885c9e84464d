// tools/tessera/data_tokenize.hpp — `tessera data ...`: offline data preparation that lives in the
// CLI, not in core/ (which knows no dataset). `data tokenize` turns text into token shards.
#pragma once
#include <string>
#include <vector>

namespace tessera::tools {

// args: the whole command line, args[1] == "data". Returns the exit code: 0 ok, 1 an error
// (the message names the file), 2 bad usage.
int run_data_command(const std::vector<std::string>& args);

}  // namespace tessera::tools

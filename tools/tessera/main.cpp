// tools/tessera/main.cpp — the `tessera` executable: hands its arguments to the core's CLI.
// Thin by design: parsing, building, training and reporting all live in core/; `tessera data ...`
// (offline data preparation, which core/ knows nothing about) lives beside this file.
#include <string>
#include <vector>

#include "data_speak.hpp"
#include "data_tokenize.hpp"
#include "tessera/core/cli.hpp"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv, argv + argc);
  // `data tokenize` needs SentencePiece, which the core does not link; `data inspect` is the core's.
  if (args.size() >= 3 && args[1] == "data" && args[2] == "speak") return tessera::tools::run_data_speak(args);
  if (args.size() >= 3 && args[1] == "data" && args[2] == "tokenize") return tessera::tools::run_data_command(args);
  return tessera::run_cli(args);
}

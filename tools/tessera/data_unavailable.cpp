// tools/tessera/data_unavailable.cpp — `tessera data ...` in a build without SentencePiece
// (libsentencepiece-dev): the command exists and says why it cannot run.
#include <iostream>

#include "data_tokenize.hpp"

namespace tessera::tools {

int run_data_command(const std::vector<std::string>& /*args*/) {
  std::cerr << "error: this tessera was built without SentencePiece, so `tessera data tokenize` is not available "
               "(install libsentencepiece-dev and rebuild)\n";
  return 1;
}

}  // namespace tessera::tools

// tools/tessera/data_speak.hpp — `tessera data speak`: Fashion-MNIST's class captions spoken by
// espeak-ng into a cache, for the fashion_mnist dataset's spoken_captions key.
#pragma once
#include <string>
#include <vector>

namespace tessera::tools {

// args: the whole command line, args[1] == "data", args[2] == "speak". Returns the exit code:
// 0 ok, 1 an error (the message names the file or program), 2 bad usage.
int run_data_speak(const std::vector<std::string>& args);

}  // namespace tessera::tools

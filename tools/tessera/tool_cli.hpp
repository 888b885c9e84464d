// tools/tessera/tool_cli.hpp — parsing `tessera data <tool> ARGS...` (args[3...]) with a CLI11
// app, the same way for every tool: false after printing --help, std::invalid_argument (exit 2)
// with CLI11's message for bad usage.
#pragma once
#include <CLI/CLI.hpp>

#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tessera::tools {

inline bool parse_tool_args(CLI::App& app, const std::vector<std::string>& args) {
  std::vector<const char*> argv{"tessera"};
  for (size_t i = 3; i < args.size(); ++i) argv.push_back(args[i].c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp&) {
    const std::string help = app.help();
    std::cout << help << (help.empty() || help.back() != '\n' ? "\n" : "");
    return false;
  } catch (const CLI::ParseError& e) {
    throw std::invalid_argument(e.what());
  }
  return true;
}

}  // namespace tessera::tools

// tessera/core/error.hpp — the exception types the core throws for bad input.
// Every message names the thing (file, key, plugin, tensor) and the place.
#pragma once
#include <stdexcept>
#include <string>

namespace tessera {

// Base of every error a user can cause by what they pass in (config, plugin, data).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A config file, a --set override or a plugin table is wrong. what(): "file:line:col: ...".
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A plugin library cannot be loaded or used. what() names the file and the reason.
class PluginError : public Error {
 public:
  using Error::Error;
};

// Data files are missing or corrupt. what() names the file.
class DataError : public Error {
 public:
  using Error::Error;
};

// Training stopped at a step boundary because the process got SIGINT or SIGTERM; what() says
// where it stopped and how to resume. The CLI exits with 128 + signal (130, 143).
class Interrupted : public Error {
 public:
  Interrupted(int signal, const std::string& msg) : Error(msg), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

}  // namespace tessera

// plugins/datasets/fashion_mnist/errors.hpp — the reader's exception types (the plugin turns
// them into a status and message at the ABI boundary; its tests catch them by type).
#pragma once
#include <stdexcept>

namespace tessera::fashion_mnist {

// Bad arguments (a negative count, an unknown split).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A data file is missing or corrupt; what() names the file.
class DataError : public Error {
 public:
  using Error::Error;
};

}  // namespace tessera::fashion_mnist

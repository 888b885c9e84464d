// webdataset/npy.hpp — NumPy .npy arrays (format versions 1, 2 and 3) read from memory, header
// parsed here: little-endian '<f4' '<f8' '<i8' '<i4' and '|u1', C order.
#pragma once
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::webdataset {

struct NpyHeader {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  size_t data_offset = 0;  // where the array's bytes start
};

// Throws std::runtime_error naming `source` for a bad magic or version, a header that is not a
// dict with 'descr', 'fortran_order' and 'shape', an unsupported dtype, Fortran order, or a
// size that disagrees with the shape.
NpyHeader parse_npy_header(const uint8_t* data, size_t size, const std::string& source);
// The array, a copy of the bytes (contiguous, C order).
at::Tensor decode_npy(const uint8_t* data, size_t size, const std::string& source);

}  // namespace tessera::webdataset

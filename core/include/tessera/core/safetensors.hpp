// tessera/core/safetensors.hpp — reading and writing the safetensors file format
// (u64 LE header length, JSON header, packed little-endian tensor bytes); writes are atomic.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

// Named tensors, in the order they appear in a file's header.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes tensors (any of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL; any strides; any
// device, copied to CPU) and string metadata ("__metadata__", omitted when empty) to path.
// The header keeps the given order, tensors are packed in that order and the header is padded
// with spaces to a multiple of 8 bytes. Atomic: writes "<path>.tmp.<pid>", fflush + fsync,
// renames it over path, fsyncs the directory. Throws tessera::Error naming path on an
// unsupported dtype, an empty, duplicate or "__metadata__" tensor name, or an I/O failure;
// any existing file at path is then left untouched and the temporary file is removed.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  NamedTensors tensors;  // CPU, contiguous, in header order
  std::map<std::string, std::string> metadata;
};

// Loads every tensor into CPU memory. Throws tessera::Error naming path and what is wrong:
// missing/unreadable file, shorter than 8 bytes, header length beyond the file size, invalid
// JSON or a header that is not an object of {dtype, shape, data_offsets} entries, non-string
// metadata, unknown dtype, offsets out of bounds, overlapping, leaving gaps or not matching
// shape * itemsize, and bytes after the last tensor (trailing garbage).
SafetensorsFile load_safetensors(const std::string& path);

// The safetensors dtype string for a scalar type ("F32", ...); throws tessera::Error for a
// type the format has no name for here (complex, quantised, ...).
std::string safetensors_dtype_name(at::ScalarType type);

}  // namespace tessera

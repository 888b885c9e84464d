// media/bytes.hpp — whole files and byte ranges of files read into memory, with errors that name
// the file: what every reader hands the decoders (a file of a folder, a member of a tar shard).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::media {

using Bytes = std::vector<uint8_t>;

// The whole file. Throws std::runtime_error "cannot read '<path>': <reason>".
Bytes read_file(const std::string& path);

// `size` bytes at `offset` of the file (pread; safe from any thread). Throws, naming `path` and
// `what` (e.g. the tar member), when the file is shorter or cannot be read.
Bytes read_range(const std::string& path, int64_t offset, int64_t size, const std::string& what);

}  // namespace tessera::media

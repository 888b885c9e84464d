// core/src/safetensors.cpp — safetensors reader/writer: strict header validation on load,
// atomic (temp file + fsync + rename) saves.
#include "tessera/core/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "tessera/core/error.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "tensor bytes are written as they lie in memory: little-endian hosts only");

namespace tessera {
namespace {

using ojson = nlohmann::ordered_json;

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;  // as the reference implementation

struct DtypeEntry {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeEntry kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

bool dtype_from_name(const std::string& name, at::ScalarType* out) {
  for (const auto& d : kDtypes) {
    if (name == d.name) {
      *out = d.type;
      return true;
    }
  }
  return false;
}

std::string errno_text() { return std::strerror(errno); }

// Owns a FILE*; closes it on destruction.
struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// Removes the temporary file unless the save committed it.
struct TmpGuard {
  std::string path;
  bool armed = true;
  ~TmpGuard() {
    if (armed) ::unlink(path.c_str());
  }
};

void write_all(std::FILE* f, const void* data, size_t n, const std::string& path,
               const std::string& tmp) {
  if (n == 0) return;
  if (std::fwrite(data, 1, n, f) != n) {
    throw Error("cannot write safetensors file " + path + " (temporary " + tmp +
                "): " + errno_text());
  }
}

[[noreturn]] void fail(const std::string& path, const std::string& reason) {
  throw Error("safetensors file " + path + ": " + reason);
}

uint64_t get_u64(const ojson& v, const std::string& path, const std::string& what) {
  if (!v.is_number_unsigned()) {
    fail(path, what + " must be a non-negative integer, got " + v.dump());
  }
  return v.get<uint64_t>();
}

}  // namespace

std::string safetensors_dtype_name(at::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (d.type == type) return d.name;
  }
  throw Error(std::string("safetensors has no dtype for ") + c10::toString(type));
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // 1. Build the header and the contiguous CPU copies, before touching the disk.
  ojson header = ojson::object();
  if (!metadata.empty()) {
    ojson meta = ojson::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::vector<at::Tensor> data;  // each contiguous CPU, in order
  data.reserve(tensors.size());
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty()) fail(path, "cannot save a tensor with an empty name");
    if (name == "__metadata__") fail(path, "tensor name \"__metadata__\" is reserved");
    if (!seen.insert(name).second) fail(path, "duplicate tensor name '" + name + "'");
    if (!tensor.defined()) fail(path, "tensor '" + name + "' is undefined");
    std::string dtype;
    try {
      dtype = safetensors_dtype_name(tensor.scalar_type());
    } catch (const Error&) {
      fail(path, "tensor '" + name + "' has unsupported dtype " +
                     std::string(c10::toString(tensor.scalar_type())) +
                     " (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
    }
    at::Tensor t = tensor.cpu().contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    ojson entry = ojson::object();
    entry["dtype"] = dtype;
    entry["shape"] = t.sizes().vec();
    entry["data_offsets"] = {offset, offset + nbytes};
    header[name] = std::move(entry);
    offset += nbytes;
    data.push_back(std::move(t));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("cannot encode the header: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len_bytes[8];
  const uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(len >> (8 * i));

  // 2. Write a temporary file next to the target, sync it, rename it over the target.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FilePtr f(std::fopen(tmp.c_str(), "wb"));
  if (!f) {
    throw Error("cannot save safetensors file " + path + ": cannot create temporary file " + tmp +
                ": " + errno_text());
  }
  TmpGuard guard{tmp};
  write_all(f.get(), len_bytes, sizeof(len_bytes), path, tmp);
  write_all(f.get(), text.data(), text.size(), path, tmp);
  for (const at::Tensor& t : data) {
    write_all(f.get(), t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size(), path, tmp);
  }
  if (std::fflush(f.get()) != 0 || ::fsync(::fileno(f.get())) != 0) {
    throw Error("cannot write safetensors file " + path + " (temporary " + tmp +
                "): " + errno_text());
  }
  if (std::fclose(f.release()) != 0) {
    throw Error("cannot write safetensors file " + path + " (temporary " + tmp +
                "): " + errno_text());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error("cannot save safetensors file " + path + ": rename from " + tmp +
                " failed: " + errno_text());
  }
  guard.armed = false;
  // Make the rename durable. Best effort: the new file is in place whatever happens here.
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

SafetensorsFile load_safetensors(const std::string& path) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) {
    if (errno == ENOENT) throw Error("safetensors file not found: " + path);
    throw Error("cannot open safetensors file " + path + ": " + errno_text());
  }
  struct stat st {};
  if (::fstat(::fileno(f.get()), &st) != 0) fail(path, "cannot stat: " + errno_text());
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    fail(path, "file is " + std::to_string(file_size) +
                   " bytes, shorter than the 8-byte header length");
  }
  unsigned char len_bytes[8];
  if (std::fread(len_bytes, 1, 8, f.get()) != 8) fail(path, "cannot read the header length");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t{len_bytes[i]} << (8 * i);
  if (header_len > file_size - 8) {
    fail(path, "header length " + std::to_string(header_len) + " is beyond the file size " +
                   std::to_string(file_size));
  }
  if (header_len > kMaxHeaderBytes) {
    fail(path, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                   std::to_string(kMaxHeaderBytes) + " bytes");
  }
  std::string text(header_len, '\0');
  if (header_len > 0 && std::fread(text.data(), 1, header_len, f.get()) != header_len) {
    fail(path, "cannot read the " + std::to_string(header_len) + "-byte header");
  }
  ojson header;
  try {
    header = ojson::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "header must be a JSON object, got " + header.dump());

  const uint64_t data_size = file_size - 8 - header_len;
  const uint64_t data_start = 8 + header_len;
  SafetensorsFile out;
  struct Span {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  std::vector<std::tuple<std::string, at::ScalarType, std::vector<int64_t>, uint64_t>> entries;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "\"__metadata__\" must be an object of strings");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) {
          fail(path, "metadata value for '" + k + "' must be a string, got " + v.dump());
        }
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!entry.is_object()) fail(path, where + " must be an object, got " + entry.dump());
    const auto dt = entry.find("dtype");
    const auto sh = entry.find("shape");
    const auto off = entry.find("data_offsets");
    if (dt == entry.end() || sh == entry.end() || off == entry.end()) {
      fail(path, where + " needs \"dtype\", \"shape\" and \"data_offsets\"");
    }
    if (!dt->is_string()) fail(path, where + " has a non-string dtype " + dt->dump());
    at::ScalarType type{};
    if (!dtype_from_name(dt->get<std::string>(), &type)) {
      fail(path, where + " has unknown dtype '" + dt->get<std::string>() + "'");
    }
    if (!sh->is_array()) fail(path, where + " shape must be an array, got " + sh->dump());
    std::vector<int64_t> shape;
    uint64_t expected = c10::elementSize(type);
    for (const auto& d : *sh) {
      const uint64_t dim = get_u64(d, path, where + " shape entry");
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (dim != 0 && expected > std::numeric_limits<uint64_t>::max() / dim)) {
        fail(path, where + " shape " + sh->dump() + " is too large");
      }
      expected *= dim;
      shape.push_back(static_cast<int64_t>(dim));
    }
    if (!off->is_array() || off->size() != 2) {
      fail(path, where + " data_offsets must be [begin, end], got " + off->dump());
    }
    const uint64_t begin = get_u64((*off)[0], path, where + " data_offsets begin");
    const uint64_t end = get_u64((*off)[1], path, where + " data_offsets end");
    if (begin > end) fail(path, where + " data_offsets " + off->dump() + " end before begin");
    if (end > data_size) {
      fail(path, where + " data_offsets " + off->dump() + " out of bounds: the data section is " +
                     std::to_string(data_size) + " bytes");
    }
    if (end - begin != expected) {
      fail(path, where + " data_offsets " + off->dump() + " span " + std::to_string(end - begin) +
                     " bytes, but shape " + sh->dump() + " of " + dt->get<std::string>() +
                     " needs " + std::to_string(expected));
    }
    spans.push_back({begin, end, name});
    entries.emplace_back(name, type, std::move(shape), begin);
  }

  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t cursor = 0;
  std::string prev;
  for (const Span& s : spans) {
    if (s.begin < cursor) {
      fail(path, "tensor '" + s.name + "' data [" + std::to_string(s.begin) + ", " +
                     std::to_string(s.end) + ") overlaps tensor '" + prev + "'");
    }
    if (s.begin > cursor) {
      fail(path, "data bytes [" + std::to_string(cursor) + ", " + std::to_string(s.begin) +
                     ") belong to no tensor (gap before tensor '" + s.name + "')");
    }
    cursor = s.end;
    prev = s.name;
  }
  if (cursor != data_size) {
    fail(path, std::to_string(data_size - cursor) +
                   " bytes of trailing garbage after the last tensor's data");
  }

  out.tensors.reserve(entries.size());
  for (auto& [name, type, shape, begin] : entries) {
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));  // as declared, CPU
    const size_t nbytes = static_cast<size_t>(t.numel()) * t.element_size();
    if (nbytes > 0) {
      if (::fseeko(f.get(), static_cast<off_t>(data_start + begin), SEEK_SET) != 0) {
        fail(path, "cannot seek to tensor '" + name + "': " + errno_text());
      }
      // Bool storage must hold 0/1: read raw bytes and check before they become bools.
      if (std::fread(t.data_ptr(), 1, nbytes, f.get()) != nbytes) {
        fail(path, "cannot read tensor '" + name + "' (file truncated while reading?)");
      }
      if (type == at::kBool) {
        const auto* b = static_cast<const unsigned char*>(t.data_ptr());
        for (size_t i = 0; i < nbytes; ++i) {
          if (b[i] > 1) {
            fail(path, "tensor '" + name + "' has BOOL byte " + std::to_string(b[i]) +
                           " at element " + std::to_string(i) + " (must be 0 or 1)");
          }
        }
      }
    }
    out.tensors.emplace_back(name, std::move(t));
  }
  return out;
}

}  // namespace tessera

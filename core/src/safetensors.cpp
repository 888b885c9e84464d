// core/src/safetensors.cpp — safetensors reader/writer: strict header validation on load
// (bounded size and nesting before parsing, overflow-safe shapes and offsets, untrusted text
// quoted short in messages), atomic (temp file + fsync + rename) saves.
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
// The format's deepest value: header object -> tensor entry object -> shape array of numbers.
constexpr int kMaxHeaderDepth = 3;
constexpr size_t kMaxDims = 64;  // far beyond any real tensor; keeps a hostile shape cheap

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

// Untrusted text for a message: at most `max` bytes, non-printable bytes as \xNN, quoted,
// with the full length when cut.
std::string quote(const std::string& s, size_t max = 64) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  out += "'";
  if (s.size() > max) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

// A short description of an untrusted JSON value (its nesting is already bounded).
std::string brief(const ojson& v) {
  if (v.is_array() && v.size() > 8) return "an array of " + std::to_string(v.size()) + " values";
  if (v.is_object() && v.size() > 4) return "an object of " + std::to_string(v.size()) + " keys";
  std::string text = v.dump(-1, ' ', false, ojson::error_handler_t::replace);
  return text.size() <= 80 ? text : quote(text, 80);
}

uint64_t get_u64(const ojson& v, const std::string& path, const std::string& what) {
  if (!v.is_number_unsigned()) {
    fail(path, what + " must be a non-negative integer, got " + brief(v));
  }
  return v.get<uint64_t>();
}

// Before parsing: JSON nested deeper than the format needs is refused without recursing into
// it (a header of 100000 '[' would otherwise exhaust the stack in whatever walks it).
void check_nesting(const std::string& text, const std::string& path) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxHeaderDepth)
        fail(path, "header nests deeper than the format's " + std::to_string(kMaxHeaderDepth) +
                       " levels (at byte " + std::to_string(i) + ")");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

// Validates every entry of a parsed header (already an object of bounded nesting) against
// the data section, then reads the tensors: nothing is allocated before all of it checks out.
SafetensorsFile read_tensors(std::FILE* f, const std::string& path, const ojson& header,
                             uint64_t file_size, uint64_t header_len) {
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
          fail(path, "metadata value for " + quote(k) + " must be a string, got " + brief(v));
        }
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor " + quote(name);
    if (!entry.is_object()) fail(path, where + " must be an object, got " + brief(entry));
    const auto dt = entry.find("dtype");
    const auto sh = entry.find("shape");
    const auto off = entry.find("data_offsets");
    if (dt == entry.end() || sh == entry.end() || off == entry.end()) {
      fail(path, where + " needs \"dtype\", \"shape\" and \"data_offsets\"");
    }
    if (!dt->is_string()) fail(path, where + " has a non-string dtype " + brief(*dt));
    at::ScalarType type{};
    if (!dtype_from_name(dt->get<std::string>(), &type)) {
      fail(path, where + " has unknown dtype " + quote(dt->get<std::string>()));
    }
    if (!sh->is_array()) fail(path, where + " shape must be an array, got " + brief(*sh));
    if (sh->size() > kMaxDims) {
      fail(path, where + " has " + std::to_string(sh->size()) + " dimensions (at most " +
                     std::to_string(kMaxDims) + ")");
    }
    // Overflow-safe: the product of the non-zero dimensions must fit in int64 (what ATen
    // computes a tensor's size with, zeros or not) and, times the item size, in uint64.
    std::vector<int64_t> shape;
    const uint64_t int64_max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    uint64_t nonzero = 1;
    bool empty = false;
    for (const auto& d : *sh) {
      const uint64_t dim = get_u64(d, path, where + " shape entry");
      if (dim == 0) empty = true;
      else if (dim > int64_max / nonzero) fail(path, where + " shape " + brief(*sh) + " is too large");
      else nonzero *= dim;
      shape.push_back(static_cast<int64_t>(dim));
    }
    const uint64_t item = c10::elementSize(type);
    if (nonzero > std::numeric_limits<uint64_t>::max() / item) {
      fail(path, where + " shape " + brief(*sh) + " is too large");
    }
    const uint64_t expected = empty ? 0 : nonzero * item;
    if (!off->is_array() || off->size() != 2) {
      fail(path, where + " data_offsets must be [begin, end], got " + brief(*off));
    }
    const uint64_t begin = get_u64((*off)[0], path, where + " data_offsets begin");
    const uint64_t end = get_u64((*off)[1], path, where + " data_offsets end");
    if (begin > end) fail(path, where + " data_offsets " + brief(*off) + " end before begin");
    if (end > data_size) {
      fail(path, where + " data_offsets " + brief(*off) + " out of bounds: the data section is " +
                     std::to_string(data_size) + " bytes");
    }
    if (end - begin != expected) {
      fail(path, where + " data_offsets " + brief(*off) + " span " + std::to_string(end - begin) +
                     " bytes, but shape " + brief(*sh) + " of " + dt->get<std::string>() +
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
      fail(path, "tensor " + quote(s.name) + " data [" + std::to_string(s.begin) + ", " +
                     std::to_string(s.end) + ") overlaps tensor " + quote(prev));
    }
    if (s.begin > cursor) {
      fail(path, "data bytes [" + std::to_string(cursor) + ", " + std::to_string(s.begin) +
                     ") belong to no tensor (gap before tensor " + quote(s.name) + ")");
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
      if (::fseeko(f, static_cast<off_t>(data_start + begin), SEEK_SET) != 0) {
        fail(path, "cannot seek to tensor " + quote(name) + ": " + errno_text());
      }
      // Bool storage must hold 0/1: read raw bytes and check before they become bools.
      if (std::fread(t.data_ptr(), 1, nbytes, f) != nbytes) {
        fail(path, "cannot read tensor " + quote(name) + " (file truncated while reading?)");
      }
      if (type == at::kBool) {
        const auto* b = static_cast<const unsigned char*>(t.data_ptr());
        for (size_t i = 0; i < nbytes; ++i) {
          if (b[i] > 1) {
            fail(path, "tensor " + quote(name) + " has BOOL byte " + std::to_string(b[i]) +
                           " at element " + std::to_string(i) + " (must be 0 or 1)");
          }
        }
      }
    }
    out.tensors.emplace_back(name, std::move(t));
  }
  return out;
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
  check_nesting(text, path);
  ojson header;
  std::set<std::string> top_keys;  // a name given twice would silently replace the first
  const auto no_duplicates = [&](int depth, ojson::parse_event_t event, ojson& parsed) {
    if (depth == 1 && event == ojson::parse_event_t::key && parsed.is_string() &&
        !top_keys.insert(parsed.get<std::string>()).second) {
      fail(path, "header names " + quote(parsed.get<std::string>()) + " twice");
    }
    return true;
  };
  try {
    header = ojson::parse(text, no_duplicates);
  } catch (const nlohmann::json::exception& e) {
    // The parser's message quotes the token it read last: untrusted and of any length.
    std::string why = e.what();
    if (const size_t cut = why.find("; last read: "); cut != std::string::npos) why.resize(cut);
    fail(path, "header is not valid JSON: " + quote(why, 240));
  }
  if (!header.is_object()) fail(path, "header must be a JSON object, got " + brief(header));
  try {
    return read_tensors(f.get(), path, header, file_size, header_len);
  } catch (const nlohmann::json::exception& e) {  // not expected after the checks: still an Error
    fail(path, std::string("malformed header: ") + e.what());
  } catch (const c10::Error& e) {
    fail(path, std::string("cannot allocate a tensor: ") + e.what_without_backtrace());
  }
}

}  // namespace tessera

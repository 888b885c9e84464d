// webdataset/npy.cpp — a small parser for the Python-literal dict of an .npy header.
#include "webdataset/npy.hpp"

#include <cstring>
#include <limits>
#include <stdexcept>

namespace tessera::webdataset {
namespace {

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw std::runtime_error(source + ": bad .npy: " + what);
}

// Reads the header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& source) : s_(text), src_(source) {}

  void parse(std::string* descr, bool* fortran, std::vector<int64_t>* shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      skip();
      if (peek() == '}') break;
      const std::string key = quoted();
      expect(':');
      skip();
      if (key == "descr") {
        *descr = quoted();
        have_descr = true;
      } else if (key == "fortran_order") {
        *fortran = boolean();
        have_order = true;
      } else if (key == "shape") {
        *shape = tuple();
        have_shape = true;
      } else {
        fail(src_, "unknown header key '" + key + "'");
      }
      skip();
      if (peek() == ',') ++i_;
      else if (peek() != '}') fail(src_, "expected ',' or '}' in the header at " + std::to_string(i_));
    }
    if (!have_descr || !have_order || !have_shape) fail(src_, "the header lacks descr, fortran_order or shape");
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n')) ++i_;
  }
  void expect(char c) {
    skip();
    if (peek() != c) fail(src_, std::string("expected '") + c + "' in the header at " + std::to_string(i_));
    ++i_;
  }
  std::string quoted() {
    skip();
    const char q = peek();
    if (q != '\'' && q != '"') fail(src_, "expected a quoted string in the header at " + std::to_string(i_));
    const size_t end = s_.find(q, i_ + 1);
    if (end == std::string::npos) fail(src_, "unterminated string in the header");
    std::string out = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return out;
  }
  bool boolean() {
    if (s_.compare(i_, 4, "True") == 0) return i_ += 4, true;
    if (s_.compare(i_, 5, "False") == 0) return i_ += 5, false;
    fail(src_, "fortran_order is neither True nor False");
  }
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> out;
    while (true) {
      skip();
      if (peek() == ')') break;
      int64_t v = 0;
      size_t digits = 0;
      while (peek() >= '0' && peek() <= '9') {
        if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) fail(src_, "a dimension overflows");
        v = v * 10 + (s_[i_++] - '0');
        ++digits;
      }
      if (digits == 0) fail(src_, "shape holds something other than non-negative integers");
      out.push_back(v);
      skip();
      if (peek() == ',') ++i_;
      else if (peek() != ')') fail(src_, "expected ',' or ')' in the shape");
    }
    ++i_;
    if (out.size() > 8) fail(src_, std::to_string(out.size()) + " dims (at most 8)");
    return out;
  }

  const std::string& s_;
  const std::string& src_;
  size_t i_ = 0;
};

}  // namespace

NpyHeader parse_npy_header(const uint8_t* data, size_t size, const std::string& source) {
  if (size < 10 || std::memcmp(data, "\x93NUMPY", 6) != 0) fail(source, "no \\x93NUMPY magic");
  const int major = data[6];
  size_t header_len = 0, start = 0;
  if (major == 1) {
    header_len = data[8] | (size_t{data[9]} << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) fail(source, "the file ends inside its preamble");
    header_len = data[8] | (size_t{data[9]} << 8) | (size_t{data[10]} << 16) | (size_t{data[11]} << 24);
    start = 12;
  } else {
    fail(source, "format version " + std::to_string(major) + " (1, 2 and 3 are known)");
  }
  if (header_len > size - start) fail(source, "the header runs past the end of the file");
  const std::string text(reinterpret_cast<const char*>(data + start), header_len);
  std::string descr;
  bool fortran = false;
  NpyHeader h;
  HeaderParser(text, source).parse(&descr, &fortran, &h.shape);
  if (descr == "<f4") h.dtype = at::kFloat;
  else if (descr == "<f8") h.dtype = at::kDouble;
  else if (descr == "<i8") h.dtype = at::kLong;
  else if (descr == "<i4") h.dtype = at::kInt;
  else if (descr == "|u1") h.dtype = at::kByte;
  else fail(source, "dtype '" + descr + "' (supported: '<f4', '<f8', '<i8', '<i4', '|u1')");
  if (fortran) fail(source, "Fortran order (only C order is supported)");
  h.data_offset = start + header_len;
  const size_t item = at::elementSize(h.dtype);
  size_t count = 1;
  for (int64_t d : h.shape) {
    if (d != 0 && count > std::numeric_limits<size_t>::max() / item / static_cast<size_t>(d)) fail(source, "the shape overflows");
    count *= static_cast<size_t>(d);
  }
  if (size - h.data_offset != count * item)
    fail(source, "the shape needs " + std::to_string(count * item) + " data bytes, the file has " +
                     std::to_string(size - h.data_offset));
  return h;
}

at::Tensor decode_npy(const uint8_t* data, size_t size, const std::string& source) {
  const NpyHeader h = parse_npy_header(data, size, source);
  at::Tensor out = at::empty(h.shape, h.dtype);
  if (out.nbytes() > 0) std::memcpy(out.data_ptr(), data + h.data_offset, out.nbytes());
  return out;
}

}  // namespace tessera::webdataset

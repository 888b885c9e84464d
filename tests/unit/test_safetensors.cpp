// tests/unit/test_safetensors.cpp — safetensors round trips, byte-level format checks, every
// corruption the loader rejects, and the atomic-save guarantees.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <ATen/ATen.h>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tessera/core/error.hpp"
#include "tessera/core/safetensors.hpp"

namespace fs = std::filesystem;
using tessera::NamedTensors;

namespace {

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera_st_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

std::string read_raw(const std::string& p) {
  std::ifstream i(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(i), {});
}

void write_raw(const std::string& p, const std::string& bytes) {
  std::ofstream o(p, std::ios::binary);
  o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A file made of: u64 LE len(header), header, data.
std::string st_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string bytes_of(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// Runs f, expects tessera::Error whose message contains `path` and `reason`.
template <class F>
void expect_error(F&& f, const std::string& path, const std::string& reason) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << reason << "'";
  } catch (const tessera::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "message lacks the path: " << msg;
    EXPECT_NE(msg.find(reason), std::string::npos) << "message lacks '" << reason << "': " << msg;
  }
}

// Writes a file with the given header/data and expects load_safetensors to reject it.
void expect_load_error(const TempDir& tmp, const std::string& header, const std::string& data,
                       const std::string& reason) {
  const std::string p = tmp.file("bad.safetensors");
  write_raw(p, st_bytes(header, data));
  SCOPED_TRACE("header: " + header);
  expect_error([&] { tessera::load_safetensors(p); }, p, reason);
}

}  // namespace

TEST(Safetensors, RoundTripDtypesShapesAndMetadata) {
  at::manual_seed(3);
  const at::Tensor base = at::arange(20, at::kFloat).view({4, 5});
  NamedTensors in = {
      {"z_first", at::randn({3, 4}, at::kDouble)},
      {"f32", at::randn({2, 3, 4})},
      {"f16", at::randn({5}).to(at::kHalf)},
      {"bf16", at::randn({2, 2}).to(at::kBFloat16)},
      {"i64", at::tensor({std::numeric_limits<int64_t>::min(), int64_t{-1}, int64_t{0},
                          std::numeric_limits<int64_t>::max()})},
      {"i32", at::randint(-1000000, 1000000, {7}, at::kInt)},
      {"i16", at::randint(-30000, 30000, {3, 1}, at::kShort)},
      {"i8", at::randint(-128, 127, {9}, at::kChar)},
      {"u8", at::arange(256, at::kLong).to(at::kByte)},
      {"bool", at::randn({3, 3}) > 0},
      {"scalar", at::scalar_tensor(3.5, at::kFloat)},
      {"empty", at::empty({0}, at::kFloat)},
      {"empty3", at::empty({2, 0, 3}, at::kInt)},
      {"transposed", base.t()},
      {"strided", base.slice(1, 0, 5, 2)},
      {"a_last", at::ones({1}, at::kDouble)},
  };
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"note", "h\xC3\xA9llo \"quoted\"\n\ttab"}, {"empty", ""}};
  TempDir tmp;
  const std::string p = tmp.file("model.safetensors");
  tessera::save_safetensors(p, in, meta);
  const tessera::SafetensorsFile out = tessera::load_safetensors(p);
  EXPECT_EQ(out.metadata, meta);
  ASSERT_EQ(out.tensors.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    SCOPED_TRACE(in[i].first);
    EXPECT_EQ(out.tensors[i].first, in[i].first);  // order kept
    const at::Tensor& got = out.tensors[i].second;
    const at::Tensor& want = in[i].second;
    EXPECT_EQ(got.scalar_type(), want.scalar_type());
    EXPECT_EQ(got.sizes(), want.sizes());
    EXPECT_TRUE(got.is_contiguous());
    EXPECT_TRUE(got.device().is_cpu());
    EXPECT_TRUE(at::equal(got, want));
  }
  EXPECT_EQ(out.tensors[10].second.dim(), 0);
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"model.safetensors"});
}

TEST(Safetensors, NoMetadataAndNoTensors) {
  TempDir tmp;
  const std::string p = tmp.file("empty.safetensors");
  tessera::save_safetensors(p, {});
  const std::string raw = read_raw(p);
  ASSERT_EQ(raw.size(), 16u);  // "{}" padded to 8
  EXPECT_EQ(raw.substr(8), "{}      ");
  const auto f = tessera::load_safetensors(p);
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_TRUE(f.metadata.empty());
}

TEST(Safetensors, HeaderBytesFollowTheSpec) {
  TempDir tmp;
  const std::string p = tmp.file("spec.safetensors");
  tessera::save_safetensors(p,
                            {{"b", at::tensor({1.0f, -2.5f})},
                             {"a", at::tensor({int16_t{7}, int16_t{-1}}).view({1, 2})}},
                            {{"k", "v"}});
  const std::string raw = read_raw(p);
  ASSERT_GE(raw.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t{static_cast<unsigned char>(raw[i])} << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(raw.size(), 8 + n + 8 + 4);
  const std::string header = raw.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  const size_t close = header.find_last_of('}');
  for (size_t i = close + 1; i < header.size(); ++i) EXPECT_EQ(header[i], ' ');
  EXPECT_LT(header.size() - close - 1, 8u);

  const auto j = nlohmann::ordered_json::parse(header);
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"__metadata__", "b", "a"}));
  EXPECT_EQ(j["__metadata__"], nlohmann::ordered_json({{"k", "v"}}));
  EXPECT_EQ(j["b"]["dtype"], "F32");
  EXPECT_EQ(j["b"]["shape"], nlohmann::ordered_json::array({2}));
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::ordered_json::array({0, 8}));
  EXPECT_EQ(j["a"]["dtype"], "I16");
  EXPECT_EQ(j["a"]["shape"], nlohmann::ordered_json::array({1, 2}));
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::ordered_json::array({8, 12}));

  const std::string data = raw.substr(8 + n);
  const unsigned char want[12] = {0x00, 0x00, 0x80, 0x3F,   // 1.0f
                                  0x00, 0x00, 0x20, 0xC0,   // -2.5f
                                  0x07, 0x00, 0xFF, 0xFF};  // int16 7, -1
  EXPECT_EQ(std::memcmp(data.data(), want, 12), 0);
}

TEST(Safetensors, LoadsFilesFromOtherWriters) {
  TempDir tmp;
  const std::string p = tmp.file("other.safetensors");
  // No metadata, no padding, keys in a different order from the data, extra fields ignored.
  const std::string header =
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
      R"("a":{"dtype":"F32","shape":[],"data_offsets":[0,4],"extra":1},)"
      R"("e":{"dtype":"U8","shape":[0,4],"data_offsets":[8,8]}})";
  write_raw(p, st_bytes(header, bytes_of({2.0f, 3.0f})));
  const auto f = tessera::load_safetensors(p);
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors[0].first, "b");
  EXPECT_EQ(f.tensors[0].second.item<float>(), 3.0f);
  EXPECT_EQ(f.tensors[1].first, "a");
  EXPECT_EQ(f.tensors[1].second.dim(), 0);
  EXPECT_EQ(f.tensors[1].second.item<float>(), 2.0f);
  EXPECT_EQ(f.tensors[2].second.sizes(), (at::IntArrayRef{0, 4}));
  EXPECT_EQ(f.tensors[2].second.scalar_type(), at::kByte);
}

TEST(Safetensors, CorruptFilesAreRejectedWithPathAndReason) {
  TempDir tmp;
  const std::string f8 = bytes_of({1.0f, 2.0f});  // 8 data bytes
  const std::string ok_a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

  // Missing file, too short, header length beyond the file.
  const std::string missing = tmp.file("missing.safetensors");
  expect_error([&] { tessera::load_safetensors(missing); }, missing, "not found");
  const std::string shortf = tmp.file("short.safetensors");
  write_raw(shortf, "abcde");
  expect_error([&] { tessera::load_safetensors(shortf); }, shortf, "shorter than");
  const std::string beyond = tmp.file("beyond.safetensors");
  write_raw(beyond, le64(1000) + "{}");
  expect_error([&] { tessera::load_safetensors(beyond); }, beyond, "beyond the file size");
  const std::string huge = tmp.file("huge.safetensors");
  write_raw(huge, le64(~uint64_t{0}) + "{}");
  expect_error([&] { tessera::load_safetensors(huge); }, huge, "beyond the file size");

  expect_load_error(tmp, "", "", "not valid JSON");
  expect_load_error(tmp, "{not json", "", "not valid JSON");
  expect_load_error(tmp, "[1, 2]", "", "must be a JSON object");
  expect_load_error(tmp, R"({"a": 5})", "", "must be an object");
  expect_load_error(tmp, R"({"a":{"dtype":"F32","shape":[2]}})", f8, "needs");
  expect_load_error(tmp, R"({"a":{"dtype":"F8","shape":[2],"data_offsets":[0,8]}})", f8,
                    "unknown dtype 'F8'");
  expect_load_error(tmp, R"({"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", f8,
                    "unknown dtype");
  expect_load_error(tmp, R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f8,
                    "non-negative integer");
  expect_load_error(tmp, R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", f8,
                    "non-negative integer");
  expect_load_error(tmp, R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", f8,
                    "shape must be an array");
  expect_load_error(tmp, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", f8,
                    "data_offsets must be [begin, end]");
  expect_load_error(tmp, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", f8,
                    "end before begin");
  expect_load_error(tmp, R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f8,
                    "out of bounds");
  expect_load_error(tmp, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f8,
                    "needs 12");
  expect_load_error(tmp,
                    R"({"a":{"dtype":"I64","shape":[4611686018427387904,4],"data_offsets":[0,8]}})",
                    f8, "too large");
  expect_load_error(tmp,
                    "{" + ok_a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f8,
                    "overlaps");
  expect_load_error(tmp,
                    R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                    f8 + "1234", "belong to no tensor");
  expect_load_error(tmp, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f8,
                    "belong to no tensor");
  expect_load_error(tmp, "{" + ok_a + "}", f8 + "junk", "trailing garbage");
  expect_load_error(tmp, "{}", "x", "trailing garbage");
  expect_load_error(tmp, R"({"__metadata__":{"k":1},)" + ok_a + "}", f8, "must be a string");
  expect_load_error(tmp, R"({"__metadata__":[],)" + ok_a + "}", f8, "__metadata__");
  expect_load_error(tmp, R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                    std::string("\x01\x02", 2), "BOOL byte 2");
}

TEST(Safetensors, FailedSaveLeavesOldFileAndNoTempFile) {
  TempDir tmp;
  const std::string p = tmp.file("model.safetensors");
  tessera::save_safetensors(p, {{"w", at::arange(6, at::kFloat)}}, {{"v", "1"}});
  const std::string before = read_raw(p);

  // An unsupported dtype (complex) fails the save.
  expect_error(
      [&] {
        tessera::save_safetensors(p, {{"ok", at::ones({3})},
                                      {"c", at::ones({2}, at::kComplexFloat)}});
      },
      p, "unsupported dtype");
  EXPECT_EQ(read_raw(p), before);
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"model.safetensors"});

  // Bad names fail the same way.
  expect_error([&] { tessera::save_safetensors(p, {{"x", at::ones({1})}, {"x", at::ones({1})}}); },
               p, "duplicate tensor name 'x'");
  expect_error([&] { tessera::save_safetensors(p, {{"__metadata__", at::ones({1})}}); }, p,
               "reserved");
  expect_error([&] { tessera::save_safetensors(p, {{"", at::ones({1})}}); }, p, "empty name");
  expect_error([&] { tessera::save_safetensors(p, {{"u", at::Tensor()}}); }, p, "undefined");
  EXPECT_EQ(read_raw(p), before);
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"model.safetensors"});

  // A rename that fails (the target is a directory) removes the temporary file.
  const std::string dir_target = tmp.file("dir.safetensors");
  fs::create_directory(dir_target);
  expect_error([&] { tessera::save_safetensors(dir_target, {{"w", at::ones({2})}}); },
               dir_target, "rename");
  EXPECT_TRUE(fs::is_directory(dir_target));
  EXPECT_EQ(tmp.entries(), (std::vector<std::string>{"dir.safetensors", "model.safetensors"}));

  // A missing parent directory fails before anything is written.
  const std::string nowhere = tmp.file("no/such/dir/model.safetensors");
  expect_error([&] { tessera::save_safetensors(nowhere, {{"w", at::ones({2})}}); }, nowhere,
               "temporary file");

  const auto f = tessera::load_safetensors(p);
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_TRUE(at::equal(f.tensors[0].second, at::arange(6, at::kFloat)));
}

TEST(Safetensors, SaveReplacesExistingFile) {
  TempDir tmp;
  const std::string p = tmp.file("m.safetensors");
  tessera::save_safetensors(p, {{"old", at::zeros({1000})}});
  const at::Tensor big = at::randn({512, 1024});
  tessera::save_safetensors(p, {{"new", big}}, {{"step", "2"}});
  const auto f = tessera::load_safetensors(p);
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors[0].first, "new");
  EXPECT_TRUE(at::equal(f.tensors[0].second, big));
  EXPECT_EQ(f.metadata.at("step"), "2");
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"m.safetensors"});
}

TEST(Safetensors, DtypeNames) {
  EXPECT_EQ(tessera::safetensors_dtype_name(at::kBFloat16), "BF16");
  EXPECT_EQ(tessera::safetensors_dtype_name(at::kBool), "BOOL");
  EXPECT_EQ(tessera::safetensors_dtype_name(at::kChar), "I8");
  EXPECT_THROW(tessera::safetensors_dtype_name(at::kComplexDouble), tessera::Error);
}

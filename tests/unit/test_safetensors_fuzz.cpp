// tests/unit/test_safetensors_fuzz.cpp — the safetensors reader on hostile input: deep nesting,
// huge names, and a seeded fuzz of mutated, random and truncated files that must each load or throw tessera::Error.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "support.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/safetensors.hpp"

namespace {

namespace fs = std::filesystem;

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

void write_raw(const fs::path& p, const std::string& bytes) {
  std::ofstream o(p, std::ios::binary | std::ios::trunc);
  o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_raw(const fs::path& p) {
  std::ifstream i(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(i), {});
}

// "ok" when it loads, "error" for tessera::Error; anything else is reported as a failure.
std::string load_outcome(const fs::path& p, std::string* message = nullptr) {
  try {
    tessera::load_safetensors(p.string());
    return "ok";
  } catch (const tessera::Error& e) {
    if (message) *message = e.what();
    return "error";
  } catch (const std::exception& e) {
    return std::string("foreign exception: ") + e.what();
  } catch (...) {
    return "foreign exception of unknown type";
  }
}

}  // namespace

// A header of 100000 '[' used to exhaust the stack (the parser, then the error message that
// printed the header back). It is refused before parsing, and the message stays short.
TEST(SafetensorsHostile, DeepNestingIsRefusedBeforeParsing) {
  const fs::path dir = tessera::test::temp_dir("st_fuzz", "deep");
  for (const std::string& header : {std::string(100000, '['), std::string(100000, '{'),
                                    "{\"a\":" + std::string(50000, '['), std::string("{\"a\":{\"shape\":[[1]]}}")}) {
    const fs::path p = dir / "deep.safetensors";
    write_raw(p, le64(header.size()) + header);
    std::string msg;
    ASSERT_EQ(load_outcome(p, &msg), "error") << header.substr(0, 20);
    EXPECT_NE(msg.find("nests deeper than the format's 3 levels"), std::string::npos) << msg;
    EXPECT_LT(msg.size(), 400u) << msg;
  }
}

// Untrusted names and values appear in messages as short, escaped prefixes.
TEST(SafetensorsHostile, UntrustedTextIsQuotedShortAndEscaped) {
  const fs::path dir = tessera::test::temp_dir("st_fuzz", "quote");
  const std::string name = std::string(100000, 'n') + "x";
  const std::string header = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}";
  const fs::path p = dir / "long.safetensors";
  write_raw(p, le64(header.size()) + header + std::string(4, '\0'));
  std::string msg;
  ASSERT_EQ(load_outcome(p, &msg), "error");
  EXPECT_LT(msg.size(), 400u) << msg.substr(0, 400);
  EXPECT_NE(msg.find("(100001 bytes)"), std::string::npos) << msg;

  const std::string ctl = "{\"a\\u0007b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}";
  write_raw(p, le64(ctl.size()) + ctl + std::string(4, '\0'));
  ASSERT_EQ(load_outcome(p, &msg), "error");
  EXPECT_NE(msg.find("'a\\x07b'"), std::string::npos) << msg;

  const std::string dup = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                          "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  write_raw(p, le64(dup.size()) + dup + "x");
  ASSERT_EQ(load_outcome(p, &msg), "error");
  EXPECT_NE(msg.find("names 'a' twice"), std::string::npos) << msg;

  // Zero-sized tensors whose other dimensions multiply past int64 (what ATen would overflow on).
  const std::string wide = "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387904,4],\"data_offsets\":[0,0]}}";
  write_raw(p, le64(wide.size()) + wide);
  ASSERT_EQ(load_outcome(p, &msg), "error");
  EXPECT_NE(msg.find("too large"), std::string::npos) << msg;
}

// Seeded fuzz: valid files byte-flipped, spliced, truncated and given bad lengths, plus random
// JSON-ish headers built from the format's own tokens. Every case loads or throws tessera::Error.
TEST(SafetensorsHostile, FuzzedFilesLoadOrThrowTesseraError) {
  const fs::path dir = tessera::test::temp_dir("st_fuzz", "fuzz");
  std::mt19937_64 rng(20240611);
  auto uniform = [&](uint64_t n) { return n == 0 ? uint64_t{0} : rng() % n; };

  // Seeds: real files from the writer.
  std::vector<std::string> seeds;
  {
    at::manual_seed(1);
    const fs::path p = dir / "seed.safetensors";
    tessera::save_safetensors(p.string(), {{"w", at::randn({3, 4})}, {"b", at::arange(5, at::kLong)}},
                              {{"step", "12"}, {"kind", "test"}});
    seeds.push_back(read_raw(p));
    tessera::save_safetensors(p.string(), {{"m", at::ones({2, 2}, at::kBool)}, {"e", at::empty({0, 7})},
                                           {"h", at::randn({6}).to(at::kBFloat16)}});
    seeds.push_back(read_raw(p));
    tessera::save_safetensors(p.string(), {});
    seeds.push_back(read_raw(p));
  }
  const std::vector<std::string> tokens = {
      "{", "}", "[", "]", ",", ":", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "\"F32\"",
      "\"BOOL\"", "\"I64\"", "\"x\"", "0", "1", "8", "-1", "2.5", "1e400", "18446744073709551615",
      "9223372036854775808", "null", "true", "\"\\u0000\"", "\"\\ud800\"", "\"\xff\"", " ", "\"a\\\"b\""};

  int loaded = 0, refused = 0;
  const fs::path p = dir / "case.safetensors";
  for (int i = 0; i < 600; ++i) {
    std::string bytes;
    const int kind = i % 6;
    const std::string& seed = seeds[uniform(seeds.size())];
    if (kind == 0) {  // flip a few bytes anywhere
      bytes = seed;
      for (uint64_t k = 0, n = 1 + uniform(4); k < n; ++k) bytes[uniform(bytes.size())] ^= static_cast<char>(1 + uniform(255));
    } else if (kind == 1) {  // truncate
      bytes = seed.substr(0, uniform(seed.size() + 1));
    } else if (kind == 2) {  // a wrong header length
      bytes = seed;
      const uint64_t len = uniform(3) == 0 ? rng() : uniform(bytes.size() + 16);
      bytes.replace(0, 8, le64(len));
    } else if (kind == 3) {  // splice: insert or delete a run inside the header
      bytes = seed;
      const size_t at = 8 + uniform(bytes.size() - 8);
      if (uniform(2)) bytes.insert(at, tokens[uniform(tokens.size())]);
      else bytes.erase(at, 1 + uniform(8));
    } else {  // random headers from the format's tokens, with a little data after them
      std::string header;
      for (uint64_t k = 0, n = 1 + uniform(40); k < n; ++k) header += tokens[uniform(tokens.size())];
      if (kind == 5) header = "{\"t\":{\"dtype\":\"F32\",\"shape\":[" + header + "],\"data_offsets\":[0,8]}}";
      bytes = le64(header.size()) + header + std::string(uniform(16), '\x01');
    }
    write_raw(p, bytes);
    const std::string outcome = load_outcome(p);
    if (outcome == "ok") ++loaded;
    else if (outcome == "error") ++refused;
    else ADD_FAILURE() << "case " << i << " (kind " << kind << "): " << outcome;
  }
  std::cout << "safetensors fuzz: " << loaded << " loaded, " << refused << " refused with tessera::Error\n";
  EXPECT_GT(refused, 300);
}

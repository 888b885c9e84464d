// tests/unit/test_sdk.cpp — what a plugin author meets: a plugin without keys, bounds open on one
// side, the search path as an override order, a relative plugin_path, `plugins inspect` of a
// library that did not load, and the half-precision helpers of tessera/half.h.
#include <gtest/gtest.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "tessera/core/cli.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "support.hpp"
#include "paths.hpp"
#include <tessera/half.h>

namespace fs = std::filesystem;
using namespace tessera;

using tessera::test::cli;
using tessera::test::CliResult;

namespace {
fs::path temp_dir(const std::string& tag) { return tessera::test::temp_dir("sdk", tag); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// TESSERA_PLUGIN_NO_KEYS: no zero-size array, and the core builds and trains such a plugin.
TEST(Sdk, APluginWithoutKeysLoadsAndIsBuilt) {
  PluginRegistry reg;
  reg.scan({TESSERA_TEST_PLUGIN_DIR});
  const auto lib = reg.get("keyless", TSR_KIND_ENCODER, "test");
  EXPECT_TRUE(lib->schema().keys.empty());
  CliResult r = cli({"plugins", "inspect", "keyless", "--plugin-path", TESSERA_TEST_PLUGIN_DIR});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("config keys (0):"), std::string::npos) << r.out;
  fs::path d = temp_dir("keyless");
  const std::string cfg = tessera::test::write_file(
      d / "k.toml", "[experiment]\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\", \"" + TESSERA_TEST_PLUGIN_DIR + "\"]\n"
                    "[[encoder]]\nplugin = \"keyless\"\n[[encoder]]\nplugin = \"mlp\"\n[[loss]]\nplugin = \"cross_entropy\"\n");
  r = cli({"check", cfg});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("keyless"), std::string::npos) << r.out;
  // A key given to a plugin that takes none is refused like any unknown key.
  r = cli({"check", cfg, "--set", "encoder.0.scale=2"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("unknown key 'scale'"), std::string::npos) << r.err;
}

// kNoMax / kNoMin leave one side open; a key without bounds takes any number. (The old
// kUnbounded = 0.0 declared [0, 0] when used as a bound.)
TEST(Sdk, OneSidedBoundsAreOpenOnTheOtherSide) {
  PluginRegistry reg;
  reg.scan({TESSERA_TEST_PLUGIN_DIR});
  const Schema& schema = reg.get("open_bounds", TSR_KIND_ENCODER, "test")->schema();
  auto resolve = [&](const std::string& text) {
    Config c = Config::parse(text, "b.toml");
    return c.resolve(c.root(), schema, "[[encoder]] #1");
  };
  EXPECT_EQ(resolve("depth = 1000000000\nshift = -1e300\nany = 1e300\n").get_int("depth"), 1000000000);
  EXPECT_EQ(resolve("any = -1e300\n").get_float("any"), -1e300);
  EXPECT_EQ(error_of([&] { resolve("depth = 0\n"); }),
            "b.toml:1:9: key 'depth' in [[encoder]] #1 must be >= 1, got 0");
  EXPECT_EQ(error_of([&] { resolve("shift = 11.0\n"); }),
            "b.toml:1:9: key 'shift' in [[encoder]] #1 must be <= 10, got 11");
}

// The search path is an override order: a plugin earlier on it hides a same-named one later
// (logged, both files named); two of a name in one directory stay an error.
TEST(Sdk, EarlierSearchDirectoriesOverrideLaterOnes) {
  fs::path a = temp_dir("override_a"), b = temp_dir("override_b");
  fs::copy_file(TESSERA_PLUGIN_DIR + "/mlp.so", a / "mlp.so");
  fs::copy_file(TESSERA_PLUGIN_DIR + "/mlp.so", b / "my_mlp.so");
  PluginRegistry reg;
  reg.scan({a.string(), b.string()});
  EXPECT_EQ(reg.get("mlp", TSR_KIND_ENCODER, "test")->path(), (a / "mlp.so").string());
  ASSERT_EQ(reg.overridden().size(), 1u);
  EXPECT_EQ(reg.overridden()[0], (b / "my_mlp.so").string());
  PluginRegistry other;
  other.scan({b.string(), a.string()});
  EXPECT_EQ(other.get("mlp", TSR_KIND_ENCODER, "test")->path(), (b / "my_mlp.so").string());
  // A user's directory in [experiment] plugin_path comes before the built-in plugins.
  const auto path = PluginRegistry::default_search_path({a.string()});
  ASSERT_FALSE(path.empty());
  EXPECT_EQ(path.front(), a.string());
}

// A relative plugin_path in a config file is the file's: resolved against its directory, not
// the working directory; from --set it is the shell's.
TEST(Sdk, ARelativePluginPathIsResolvedAgainstTheConfigFile) {
  fs::path d = temp_dir("relpath");
  fs::create_directories(d / "conf");
  const std::string cfg = tessera::test::write_file(d / "conf" / "x.toml", "[experiment]\nplugin_path = [\"../myplugins\", \"/abs/dir\"]\n");
  Config c = Config::load(cfg);
  const CoreOptions o = CoreOptions::resolve(c, DistEnv{});
  ASSERT_EQ(o.experiment.plugin_path.size(), 2u);
  EXPECT_EQ(o.experiment.plugin_path[0], (d / "myplugins").string());
  EXPECT_EQ(o.experiment.plugin_path[1], "/abs/dir");
  Config s = Config::load(cfg, {"experiment.plugin_path=[\"rel\"]"});
  EXPECT_EQ(CoreOptions::resolve(s, DistEnv{}).experiment.plugin_path[0], "rel");
}

// `plugins inspect` of a library that did not load says why, instead of "no plugin named".
TEST(Sdk, InspectOfALibraryThatDidNotLoadShowsWhy) {
  CliResult r = cli({"plugins", "inspect", "broken_abi_major", "--plugin-path", TESSERA_TEST_PLUGIN_DIR});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("plugin 'broken_abi_major' did not load: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("ABI"), std::string::npos) << r.err;
}

// tessera/half.h converts exactly as LibTorch does: every one of the 65536 bf16 and fp16 bit
// patterns to f32, and f32 values (rounding to nearest even, overflow, NaN, subnormals) back.
TEST(Sdk, HalfPrecisionHelpersMatchLibTorchOnEveryBitPattern) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const auto h = static_cast<uint16_t>(bits);
    const float bf = tsr_bf16_to_f32(h), ref_bf = static_cast<float>(c10::BFloat16(h, c10::BFloat16::from_bits()));
    const float hf = tsr_f16_to_f32(h), ref_hf = static_cast<float>(c10::Half(h, c10::Half::from_bits()));
    if (std::isnan(ref_bf)) EXPECT_TRUE(std::isnan(bf)) << bits;
    else EXPECT_EQ(std::memcmp(&bf, &ref_bf, 4), 0) << "bf16 " << bits;
    if (std::isnan(ref_hf)) EXPECT_TRUE(std::isnan(hf)) << bits;
    else EXPECT_EQ(std::memcmp(&hf, &ref_hf, 4), 0) << "fp16 " << bits;
  }
  // f32 -> 16 bits: every bf16/fp16 value, the midpoints between neighbours (ties to even) and
  // their neighbours one f32 ulp away, and a sweep of f32 bit patterns.
  std::vector<float> xs;
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    for (const float v : {tsr_bf16_to_f32(static_cast<uint16_t>(bits)), tsr_f16_to_f32(static_cast<uint16_t>(bits))}) {
      if (!std::isfinite(v)) continue;
      xs.push_back(v);
      xs.push_back(std::nextafter(v, INFINITY));
      xs.push_back(std::nextafter(v, -INFINITY));
    }
  }
  for (uint64_t bits = 0; bits < (1ull << 32); bits += 40503) {
    float v;
    const auto b = static_cast<uint32_t>(bits);
    std::memcpy(&v, &b, 4);
    xs.push_back(v);
  }
  for (uint32_t m = 0; m < 65535; ++m) {  // midpoints of neighbouring positive fp16 and bf16 values
    const float lo = tsr_f16_to_f32(static_cast<uint16_t>(m)), hi = tsr_f16_to_f32(static_cast<uint16_t>(m + 1));
    if (std::isfinite(lo) && std::isfinite(hi) && m < 0x7c00) xs.push_back(static_cast<float>((static_cast<double>(lo) + hi) / 2));
    const float blo = tsr_bf16_to_f32(static_cast<uint16_t>(m)), bhi = tsr_bf16_to_f32(static_cast<uint16_t>(m + 1));
    if (std::isfinite(blo) && std::isfinite(bhi) && m < 0x7f80) xs.push_back(static_cast<float>((static_cast<double>(blo) + bhi) / 2));
  }
  size_t checked = 0;
  for (const float x : xs) {
    const uint16_t bf = tsr_f32_to_bf16(x), ref_bf = c10::BFloat16(x).x;
    const uint16_t hf = tsr_f32_to_f16(x), ref_hf = c10::Half(x).x;
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(tsr_bf16_to_f32(bf)) && std::isnan(tsr_f16_to_f32(hf))) << x;
      continue;
    }
    ASSERT_EQ(bf, ref_bf) << "bf16 of " << x;
    ASSERT_EQ(hf, ref_hf) << "fp16 of " << x;
    ++checked;
  }
  EXPECT_GT(checked, 300000u);
}

// media/test_util.hpp — what the media, folder and webdataset tests share: files written by
// independent writers (libpng, a hand-made RIFF WAV, libsndfile's Ogg Vorbis encoder), dataset
// instances built from a [data] snippet, and error-message checks. Test-only.
#pragma once
#include <gtest/gtest.h>
#include <png.h>
#include <sndfile.h>

#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tessera/core/config.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "support.hpp"

namespace tessera::test_media {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

inline void write_bytes(const fs::path& p, const Bytes& b) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
inline void write_text(const fs::path& p, const std::string& s) { write_bytes(p, Bytes(s.begin(), s.end())); }
inline Bytes read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

// A PNG written by libpng (not the libspng that reads it). color_type: PNG_COLOR_TYPE_*; rows of
// width * channels samples (bit_depth 16: big-endian pairs, as PNG stores them).
// For PNG_COLOR_TYPE_PALETTE, `palette` (RGB triples) and `alpha` (tRNS entries) are used.
inline Bytes libpng_encode(int width, int height, int color_type, int bit_depth, const Bytes& samples,
                           const Bytes& palette = {}, const Bytes& alpha = {}) {
  Bytes out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    ADD_FAILURE() << "libpng failed to write";
    return {};
  }
  png_set_write_fn(
      png, &out, [](png_structp p, png_bytep data, png_size_t n) {
        auto* o = static_cast<Bytes*>(png_get_io_ptr(p));
        o->insert(o->end(), data, data + n);
      },
      nullptr);
  png_set_IHDR(png, info, width, height, bit_depth, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    std::vector<png_color> pal(palette.size() / 3);
    for (size_t i = 0; i < pal.size(); ++i) pal[i] = {palette[3 * i], palette[3 * i + 1], palette[3 * i + 2]};
    png_set_PLTE(png, info, pal.data(), static_cast<int>(pal.size()));
    if (!alpha.empty()) png_set_tRNS(png, info, alpha.data(), static_cast<int>(alpha.size()), nullptr);
  }
  png_write_info(png, info);
  const size_t row = samples.size() / static_cast<size_t>(height);
  for (int y = 0; y < height; ++y) png_write_row(png, samples.data() + static_cast<size_t>(y) * row);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

// An RGB test picture: pixel (y, x) = (x * 40 + seed, y * 30 + seed, (x + y) * 10 + seed) mod 256.
inline Bytes rgb_samples(int width, int height, int seed) {
  Bytes s;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int v : {x * 40 + seed, y * 30 + seed, (x + y) * 10 + seed}) s.push_back(static_cast<uint8_t>(v % 256));
  return s;
}
inline Bytes rgb_png(int width, int height, int seed) {
  return libpng_encode(width, height, PNG_COLOR_TYPE_RGB, 8, rgb_samples(width, height, seed));
}

// What rgb_png(width, height, seed) holds, as the (3, H, W) f32 pixels / 255 a reader serves.
inline at::Tensor rgb_pixels(int width, int height, int seed) {
  const Bytes s = rgb_samples(width, height, seed);
  return at::tensor(std::vector<uint8_t>(s.begin(), s.end())).view({height, width, 3}).permute({2, 0, 1}).to(at::kFloat).div(255.0f);
}

// A 16-bit PCM WAV, RIFF header by hand: sample i of channel c = round(8000 * sin(i * freq * (c + 1))).
inline Bytes pcm16_wav(int rate, int frames, double freq, int channels = 1) {
  Bytes b;
  auto u32 = [&](uint32_t v) { for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i))); };
  auto u16 = [&](uint16_t v) { for (int i = 0; i < 2; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i))); };
  const uint32_t data = static_cast<uint32_t>(frames * channels * 2);
  b.insert(b.end(), {'R', 'I', 'F', 'F'});
  u32(36 + data);
  b.insert(b.end(), {'W', 'A', 'V', 'E', 'f', 'm', 't', ' '});
  u32(16), u16(1), u16(static_cast<uint16_t>(channels)), u32(static_cast<uint32_t>(rate));
  u32(static_cast<uint32_t>(rate * channels * 2)), u16(static_cast<uint16_t>(channels * 2)), u16(16);
  b.insert(b.end(), {'d', 'a', 't', 'a'});
  u32(data);
  for (int i = 0; i < frames; ++i)
    for (int c = 0; c < channels; ++c) u16(static_cast<uint16_t>(static_cast<int16_t>(std::lround(8000 * std::sin(i * freq * (c + 1))))));
  return b;
}

// An Ogg Vorbis file of a tone, written with libsndfile's encoder.
inline void write_ogg(const fs::path& p, int rate, int frames) {
  fs::create_directories(p.parent_path());
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = 1;
  info.format = SF_FORMAT_OGG | SF_FORMAT_VORBIS;
  SNDFILE* f = sf_open(p.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  std::vector<float> s(static_cast<size_t>(frames));
  for (int i = 0; i < frames; ++i) s[static_cast<size_t>(i)] = 0.5f * std::sin(i * 0.05f);
  sf_writef_float(f, s.data(), frames);
  sf_close(f);
}


// The [data] table of `cfg`, resolved against dataset plugin `plugin`'s schema (the core's own
// [data] keys, which the loader owns, are accepted with their types and ignored).
inline std::unique_ptr<DatasetInstance> make_dataset(const Config& cfg, const std::string& plugin) {
  auto lib = tessera::test::plugin_registry().get(plugin, TSR_KIND_DATASET, "test");
  Schema schema = lib->schema();
  for (const char* k : {"dataset", "train_split", "eval_split"})
    schema.keys.push_back({k, ValueType::String, std::string("\"\""), "core", 1.0, 0.0, {}});
  for (const char* k : {"batch_size", "eval_batch_size", "train_limit", "test_limit", "workers", "prefetch"})
    schema.keys.push_back({k, ValueType::Int, std::string("0"), "core", 1.0, 0.0, {}});
  for (const char* k : {"shuffle", "drop_last"})
    schema.keys.push_back({k, ValueType::Bool, std::string("false"), "core", 1.0, 0.0, {}});
  return std::make_unique<DatasetInstance>(lib, cfg.resolve(cfg.table("data"), schema, "[data]"), plugin);
}
inline std::unique_ptr<DatasetInstance> make_dataset(const std::string& plugin, const std::string& keys) {
  return make_dataset(Config::parse("[data]\n" + keys, plugin + ".toml"), plugin);
}

// The message of what f throws (a tessera::Error or std::exception), "" when it throws nothing.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_MENTIONS(statement, ...)                                          \
  do {                                                                                 \
    const std::string _msg = ::tessera::test_media::error_of([&] { statement; });      \
    EXPECT_FALSE(_msg.empty()) << #statement " did not throw";                         \
    for (const std::string& _part : std::initializer_list<std::string>{__VA_ARGS__})                                   \
      EXPECT_NE(_msg.find(_part), std::string::npos) << "'" << _part << "' not in: " << _msg; \
  } while (0)

inline bool have_program(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

}  // namespace tessera::test_media

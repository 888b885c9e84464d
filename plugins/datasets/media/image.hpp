// media/image.hpp — PNG (libspng) and JPEG (libturbojpeg) decoding from memory, and the pixels ->
// tensor step every reader shares: alpha, channel count, resize, scaling to [0, 1], normalisation.
#pragma once
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::media {

// Decoded images larger than this are refused (a defence against hostile headers; PIL's limit
// is about 89 Mpixels).
constexpr int64_t kMaxImagePixels = int64_t{1} << 27;

// PNG or JPEG bytes (told apart by their signature, not a file name) -> (H, W, C) u8, C = 3
// (RGB) or 4 (RGBA: PNGs with an alpha channel or tRNS transparency). 16-bit PNGs keep their
// high byte; grey images are replicated to RGB; no gamma or colour-profile conversion (as PIL).
// Throws std::runtime_error naming `source` for anything else, or a damaged or truncated file.
at::Tensor decode_image(const uint8_t* data, size_t size, const std::string& source);

struct ImageOptions {
  int64_t channels = 3;              // 1 (luma, ITU-R 601), 3 (RGB) or 4 (RGBA)
  int64_t height = 0, width = 0;     // output size; 0 = the decoded size
  std::string resize = "stretch";    // stretch | crop (cover, centre crop) | pad (fit, centred)
  std::string alpha = "drop";        // channels < 4: drop | white | black (composite over it)
  std::vector<double> mean, stddev;  // empty, one value, or one per channel
};

// (H, W, C) u8 from decode_image -> (channels, height, width) f32: pixels / 255, alpha handled,
// resized with an antialiased bilinear filter (torchvision's Resize(antialias=True)) when the
// size differs, then (x - mean) / stddev. `pad` fills with the alpha background (white 1,
// otherwise 0; transparent for RGBA). Throws std::invalid_argument for bad options.
at::Tensor image_tensor(const at::Tensor& hwc, const ImageOptions& options);

// Checks options once (channels 1/3/4, both or neither size, lengths of mean/std, std != 0).
void validate(const ImageOptions& options);

}  // namespace tessera::media

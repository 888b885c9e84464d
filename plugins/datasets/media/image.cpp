// media/image.cpp — decode_image over libspng / libturbojpeg, image_tensor over ATen.
#include "media/image.hpp"

#include <spng.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>

namespace tessera::media {
namespace {

constexpr uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw std::runtime_error(source + ": " + what);
}

void check_pixels(const std::string& source, int64_t width, int64_t height) {
  if (width <= 0 || height <= 0 || width * height > kMaxImagePixels)
    fail(source, "image of " + std::to_string(width) + "x" + std::to_string(height) +
                     " pixels refused (the limit is " + std::to_string(kMaxImagePixels) + " pixels)");
}

at::Tensor decode_png(const uint8_t* data, size_t size, const std::string& source) {
  std::unique_ptr<spng_ctx, void (*)(spng_ctx*)> ctx(spng_ctx_new(0), spng_ctx_free);
  if (!ctx) throw std::bad_alloc();
  auto check = [&](int r, const char* what) {
    if (r != 0) fail(source, std::string("PNG ") + what + ": " + spng_strerror(r));
  };
  check(spng_set_image_limits(ctx.get(), 1u << 16, 1u << 16), "limits");
  check(spng_set_chunk_limits(ctx.get(), size_t{64} << 20, size_t{64} << 20), "limits");
  check(spng_set_png_buffer(ctx.get(), data, size), "buffer");
  spng_ihdr ihdr{};
  check(spng_get_ihdr(ctx.get(), &ihdr), "header");
  check_pixels(source, ihdr.width, ihdr.height);
  bool alpha = ihdr.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA ||
               ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA;
  spng_trns trns{};
  const int t = spng_get_trns(ctx.get(), &trns);
  if (t == 0) alpha = true;
  else if (t != SPNG_ECHUNKAVAIL) check(t, "tRNS chunk");
  const int fmt = alpha ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8;
  size_t len = 0;
  check(spng_decoded_image_size(ctx.get(), fmt, &len), "size");
  at::Tensor out = at::empty({static_cast<int64_t>(ihdr.height), static_cast<int64_t>(ihdr.width), alpha ? 4 : 3}, at::kByte);
  if (len != static_cast<size_t>(out.numel())) fail(source, "PNG decoded size mismatch");
  check(spng_decode_image(ctx.get(), out.data_ptr<uint8_t>(), len, fmt, SPNG_DECODE_TRNS), "data");
  // The chunks after the image, up to IEND: a file cut short after its pixels is still truncated.
  check(spng_decode_chunks(ctx.get()), "end");
  return out;
}

at::Tensor decode_jpeg(const uint8_t* data, size_t size, const std::string& source) {
  std::unique_ptr<void, int (*)(tjhandle)> tj(tjInitDecompress(), tjDestroy);
  if (!tj) fail(source, std::string("JPEG: ") + tjGetErrorStr2(nullptr));
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  auto* buf = const_cast<unsigned char*>(data);  // TurboJPEG 2's API is not const-correct; it only reads
  if (tjDecompressHeader3(tj.get(), buf, size, &width, &height, &subsamp, &colorspace) != 0)
    fail(source, std::string("JPEG header: ") + tjGetErrorStr2(tj.get()));
  check_pixels(source, width, height);
  at::Tensor out = at::empty({height, width, 3}, at::kByte);
  // A warning (e.g. "premature end of JPEG file": a truncated download) is an error here.
  if (tjDecompress2(tj.get(), buf, size, out.data_ptr<uint8_t>(), width, 0, height, TJPF_RGB,
                    TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0)
    fail(source, std::string("JPEG data: ") + tjGetErrorStr2(tj.get()));
  return out;
}

// v broadcast to `channels` values, shaped (C, 1, 1).
at::Tensor per_channel(const std::vector<double>& v, int64_t channels) {
  std::vector<float> f(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) f[static_cast<size_t>(c)] = static_cast<float>(v.size() == 1 ? v[0] : v[static_cast<size_t>(c)]);
  return at::tensor(f, at::kFloat).view({channels, 1, 1});
}

at::Tensor resize_to(const at::Tensor& chw, int64_t h, int64_t w) {
  if (chw.size(1) == h && chw.size(2) == w) return chw;
  return at::_upsample_bilinear2d_aa(chw.unsqueeze(0), {h, w}, /*align_corners=*/false).squeeze(0);
}

}  // namespace

at::Tensor decode_image(const uint8_t* data, size_t size, const std::string& source) {
  if (size >= 8 && std::equal(kPngSignature, kPngSignature + 8, data)) return decode_png(data, size, source);
  if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return decode_jpeg(data, size, source);
  fail(source, size == 0 ? "empty file, not an image" : "not a PNG or JPEG image (unknown signature)");
}

void validate(const ImageOptions& o) {
  if (o.channels != 1 && o.channels != 3 && o.channels != 4)
    throw std::invalid_argument("channels must be 1, 3 or 4, not " + std::to_string(o.channels));
  if ((o.height > 0) != (o.width > 0))
    throw std::invalid_argument("image_height and image_width go together (both 0 keeps the decoded size)");
  for (const auto* v : {&o.mean, &o.stddev})
    if (v->size() > 1 && static_cast<int64_t>(v->size()) != o.channels)
      throw std::invalid_argument("normalize_mean / normalize_std need one value or one per channel (" +
                                  std::to_string(o.channels) + "), got " + std::to_string(v->size()));
  for (double s : o.stddev)
    if (s == 0.0) throw std::invalid_argument("normalize_std must not be 0");
  if (o.resize != "stretch" && o.resize != "crop" && o.resize != "pad")
    throw std::invalid_argument("image_resize must be stretch, crop or pad, not '" + o.resize + "'");
  if (o.alpha != "drop" && o.alpha != "white" && o.alpha != "black")
    throw std::invalid_argument("alpha must be drop, white or black, not '" + o.alpha + "'");
}

at::Tensor image_tensor(const at::Tensor& hwc, const ImageOptions& o) {
  TORCH_CHECK(hwc.dim() == 3 && hwc.scalar_type() == at::kByte && (hwc.size(2) == 3 || hwc.size(2) == 4),
              "image_tensor expects (H, W, 3|4) u8 pixels");
  at::Tensor x = hwc.permute({2, 0, 1}).to(at::kFloat).div_(255.0f);  // (C0, H, W) in [0, 1]
  const bool has_alpha = x.size(0) == 4;
  const float background = o.channels == 4 ? 0.0f : (o.alpha == "white" ? 1.0f : 0.0f);
  if (o.channels == 4) {
    if (!has_alpha) x = at::cat({x, at::ones({1, x.size(1), x.size(2)}, at::kFloat)});
  } else {
    if (has_alpha) {
      at::Tensor rgb = x.slice(0, 0, 3), a = x.slice(0, 3, 4);
      if (o.alpha == "drop") x = rgb;
      else x = rgb * a + background * (1.0f - a);
    }
    if (o.channels == 1)  // PIL's "L": the ITU-R 601 luma weights (exact for grey input)
      x = (x[0] * (19595.0f / 65536) + x[1] * (38470.0f / 65536) + x[2] * (7471.0f / 65536)).unsqueeze(0);
  }
  if (o.height > 0) {
    const int64_t h = x.size(1), w = x.size(2);
    if (o.resize == "stretch") {
      x = resize_to(x, o.height, o.width);
    } else {
      const double sh = static_cast<double>(o.height) / h, sw = static_cast<double>(o.width) / w;
      const double s = o.resize == "crop" ? std::max(sh, sw) : std::min(sh, sw);
      auto scaled = [&](int64_t n, int64_t target) {
        const auto v = static_cast<int64_t>(std::llround(n * s));
        return o.resize == "crop" ? std::max(v, target) : std::clamp<int64_t>(v, 1, target);
      };
      const int64_t nh = scaled(h, o.height), nw = scaled(w, o.width);
      x = resize_to(x, nh, nw);
      if (o.resize == "crop") {
        x = x.slice(1, (nh - o.height) / 2, (nh - o.height) / 2 + o.height)
                .slice(2, (nw - o.width) / 2, (nw - o.width) / 2 + o.width);
      } else {
        at::Tensor canvas = at::full({x.size(0), o.height, o.width}, background, at::kFloat);
        canvas.slice(1, (o.height - nh) / 2, (o.height - nh) / 2 + nh).slice(2, (o.width - nw) / 2, (o.width - nw) / 2 + nw).copy_(x);
        x = canvas;
      }
    }
  }
  x = x.clamp(0.0f, 1.0f);  // compositing and filtering may round a hair outside [0, 1]
  if (!o.mean.empty()) x = x - per_channel(o.mean, x.size(0));
  if (!o.stddev.empty()) x = x / per_channel(o.stddev, x.size(0));
  return x.contiguous();
}

}  // namespace tessera::media

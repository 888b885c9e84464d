// media/media_test.cpp — the shared decoders against files from INDEPENDENT writers: PNGs from
// libpng (read by libspng), a WAV from espeak-ng and a hand-made RIFF header, Ogg Vorbis from
// libsndfile's encoder; damaged input named in every error; image options; tokenizers.
#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <cstdio>
#include <cstdlib>

#include "media/audio.hpp"
#include "media/decoder.hpp"
#include "media/image.hpp"
#include "media/test_util.hpp"
#include "media/text.hpp"
#include "support.hpp"


using namespace tessera;
using namespace tessera::test_media;

namespace {

at::Tensor decode(const Bytes& b, const std::string& source = "test.png") {
  return media::decode_image(b.data(), b.size(), source);
}

}  // namespace

TEST(MediaPng, LibpngRgbAndRgbaDecodeToTheSamePixels) {
  const int w = 7, h = 5;
  const Bytes rgb = rgb_samples(w, h, 3);
  at::Tensor px = decode(libpng_encode(w, h, PNG_COLOR_TYPE_RGB, 8, rgb));
  ASSERT_EQ(px.sizes(), at::IntArrayRef({h, w, 3}));
  EXPECT_TRUE(at::equal(px.flatten(), at::tensor(std::vector<uint8_t>(rgb.begin(), rgb.end()), at::kByte)));

  Bytes rgba;
  for (size_t i = 0; i < rgb.size(); i += 3) rgba.insert(rgba.end(), {rgb[i], rgb[i + 1], rgb[i + 2], static_cast<uint8_t>(i % 256)});
  at::Tensor pa = decode(libpng_encode(w, h, PNG_COLOR_TYPE_RGBA, 8, rgba));
  ASSERT_EQ(pa.sizes(), at::IntArrayRef({h, w, 4}));
  EXPECT_TRUE(at::equal(pa.flatten(), at::tensor(std::vector<uint8_t>(rgba.begin(), rgba.end()), at::kByte)));
}

TEST(MediaPng, LibpngGreyPaletteAndSixteenBit) {
  const int w = 4, h = 3;
  Bytes grey;
  for (int i = 0; i < w * h; ++i) grey.push_back(static_cast<uint8_t>(i * 21));
  at::Tensor g = decode(libpng_encode(w, h, PNG_COLOR_TYPE_GRAY, 8, grey));
  ASSERT_EQ(g.sizes(), at::IntArrayRef({h, w, 3}));  // grey replicated to RGB
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(g[i / w][i % w][c].item<int>(), i * 21);
  // channels = 1 gives the grey value back exactly (luma weights sum to one).
  media::ImageOptions one;
  one.channels = 1;
  at::Tensor g1 = media::image_tensor(g, one);
  EXPECT_TRUE(at::equal(g1[0], at::tensor(std::vector<uint8_t>(grey.begin(), grey.end())).view({h, w}).to(at::kFloat).div(255.0f)));

  // 16-bit grey: the high byte is kept.
  Bytes g16;
  for (int i = 0; i < w * h; ++i) g16.insert(g16.end(), {static_cast<uint8_t>(i * 20), static_cast<uint8_t>(255 - i)});
  at::Tensor s = decode(libpng_encode(w, h, PNG_COLOR_TYPE_GRAY, 16, g16));
  for (int i = 0; i < w * h; ++i) EXPECT_EQ(s[i / w][i % w][0].item<int>(), i * 20) << i;

  // A palette with tRNS transparency: RGBA.
  const Bytes palette = {255, 0, 0, 0, 255, 0, 0, 0, 255};
  const Bytes alpha = {0, 128};  // entry 2 stays opaque
  Bytes idx;
  for (int i = 0; i < w * h; ++i) idx.push_back(static_cast<uint8_t>(i % 3));
  at::Tensor p = decode(libpng_encode(w, h, PNG_COLOR_TYPE_PALETTE, 8, idx, palette, alpha));
  ASSERT_EQ(p.sizes(), at::IntArrayRef({h, w, 4}));
  for (int i = 0; i < w * h; ++i) {
    const int k = i % 3;
    for (int c = 0; c < 3; ++c) EXPECT_EQ(p[i / w][i % w][c].item<int>(), palette[static_cast<size_t>(3 * k + c)]);
    EXPECT_EQ(p[i / w][i % w][3].item<int>(), k < 2 ? alpha[static_cast<size_t>(k)] : 255);
  }
}

TEST(MediaPng, TruncatedOrForeignBytesAreErrorsNamingTheSource) {
  const Bytes png = rgb_png(32, 32, 1);
  for (size_t cut : {png.size() / 2, png.size() - 13, png.size() - 12, size_t{40}, size_t{8}}) {
    const Bytes part(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(cut));
    SCOPED_TRACE("cut at " + std::to_string(cut) + " of " + std::to_string(png.size()));
    EXPECT_ERROR_MENTIONS(decode(part, "dir/cut.png"), "dir/cut.png");
  }
  Bytes flipped = png;
  flipped[png.size() / 2] ^= 0x5a;  // a CRC or zlib error
  EXPECT_ERROR_MENTIONS(decode(flipped, "flip.png"), "flip.png");
  EXPECT_ERROR_MENTIONS(decode(Bytes{'G', 'I', 'F', '8', '9', 'a', 0, 0}, "x.gif"), "x.gif", "not a PNG or JPEG");
  EXPECT_ERROR_MENTIONS(decode(Bytes{}, "empty.png"), "empty.png", "empty");
  // A header that claims a huge image is refused before anything is allocated.
  Bytes huge = libpng_encode(1, 1, PNG_COLOR_TYPE_RGB, 8, {1, 2, 3});
  huge[16] = 0x00, huge[17] = 0x01, huge[18] = 0x00, huge[19] = 0x00;  // width 65536 (CRC now wrong too)
  EXPECT_ERROR_MENTIONS(decode(huge, "huge.png"), "huge.png");
}

TEST(MediaJpeg, DecodesAndRefusesTruncatedFiles) {
  const int w = 16, h = 8;
  Bytes rgb;
  for (int i = 0; i < w * h; ++i) rgb.insert(rgb.end(), {200, 100, 50});
  tjhandle tj = tjInitCompress();
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &jpeg, &size, TJSAMP_444, 100, 0), 0);
  const Bytes file(jpeg, jpeg + size);
  tjFree(jpeg);
  tjDestroy(tj);
  at::Tensor px = decode(file, "flat.jpg").to(at::kInt);
  ASSERT_EQ(px.sizes(), at::IntArrayRef({h, w, 3}));
  EXPECT_LE((px - at::tensor({200, 100, 50}, at::kInt)).abs().max().item<int>(), 2);
  const Bytes part(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(file.size() * 2 / 3));
  EXPECT_ERROR_MENTIONS(decode(part, "cut.jpg"), "cut.jpg");
}

TEST(MediaImage, ChannelsAlphaResizeAndNormalisation) {
  // 2x2 RGBA: opaque red, transparent green, half-transparent blue, opaque white.
  at::Tensor px = at::tensor(std::vector<uint8_t>{255, 0, 0, 255, 0, 255, 0, 0, 0, 0, 255, 128, 255, 255, 255, 255}).view({2, 2, 4});
  media::ImageOptions o;
  at::Tensor drop = media::image_tensor(px, o);
  EXPECT_EQ(drop.sizes(), at::IntArrayRef({3, 2, 2}));
  EXPECT_FLOAT_EQ(drop[1][0][1].item<float>(), 1.0f);  // green kept under zero alpha
  o.alpha = "white";
  at::Tensor white = media::image_tensor(px, o);
  EXPECT_FLOAT_EQ(white[0][0][1].item<float>(), 1.0f);  // fully transparent -> white
  EXPECT_FLOAT_EQ(white[1][0][1].item<float>(), 1.0f);
  EXPECT_NEAR(white[0][1][0].item<float>(), 1.0f - 128.0f / 255, 1e-6);
  o.alpha = "black";
  EXPECT_FLOAT_EQ(media::image_tensor(px, o)[1][0][1].item<float>(), 0.0f);
  o.channels = 4;
  at::Tensor rgba = media::image_tensor(px, o);
  EXPECT_EQ(rgba.sizes(), at::IntArrayRef({4, 2, 2}));
  EXPECT_FLOAT_EQ(rgba[3][1][0].item<float>(), 128.0f / 255);

  // Resizes keep the requested size; pad and crop centre the picture.
  at::Tensor wide = at::full({10, 40, 3}, 255, at::kByte);
  media::ImageOptions r;
  r.height = r.width = 8;
  for (const char* mode : {"stretch", "crop", "pad"}) {
    r.resize = mode;
    at::Tensor t = media::image_tensor(wide, r);
    EXPECT_EQ(t.sizes(), at::IntArrayRef({3, 8, 8})) << mode;
  }
  r.resize = "pad";  // 40x10 fits as 8x2 rows in the middle, black (0) above and below
  at::Tensor padded = media::image_tensor(wide, r);
  EXPECT_FLOAT_EQ(padded[0][0][0].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(padded[0][3][4].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(padded[0][4][4].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(padded[0][7][7].item<float>(), 0.0f);
  // The same size is no resize at all: exact pixels.
  media::ImageOptions same;
  same.height = 10, same.width = 40;
  EXPECT_TRUE(at::equal(media::image_tensor(wide, same), at::ones({3, 10, 40})));
  // Antialiased bilinear downscaling of a constant stays that constant.
  r.resize = "stretch";
  EXPECT_TRUE(at::allclose(media::image_tensor(at::full({33, 17, 3}, 51, at::kByte), r), at::full({3, 8, 8}, 0.2f)));

  media::ImageOptions n;
  n.mean = {0.5};
  n.stddev = {0.25, 0.5, 1.0};
  at::Tensor z = media::image_tensor(at::full({1, 1, 3}, 255, at::kByte), n);
  EXPECT_FLOAT_EQ(z[0][0][0].item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(z[1][0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(z[2][0][0].item<float>(), 0.5f);

  media::ImageOptions bad;
  bad.channels = 2;
  EXPECT_THROW(media::validate(bad), std::invalid_argument);
  bad.channels = 3;
  bad.height = 5;
  EXPECT_THROW(media::validate(bad), std::invalid_argument);
  bad.height = 0;
  bad.mean = {1, 2};
  EXPECT_THROW(media::validate(bad), std::invalid_argument);
}

TEST(MediaAudio, EspeakWavDecodesToItsOwnSamplesAndRate) {
  if (!have_program("espeak-ng")) GTEST_SKIP() << "espeak-ng not installed";
  const auto dir = test::temp_dir("media", "espeak");
  const auto wav = dir / "hello.wav";
  ASSERT_EQ(std::system(("espeak-ng -w " + wav.string() + " \"hello world, this is Tessera\"").c_str()), 0);
  const Bytes file = read_bytes(wav);
  // The RIFF chunks read by hand: fmt (channels, rate, bits) and data.
  ASSERT_GE(file.size(), 44u);
  auto u32 = [&](size_t at) { return file[at] | file[at + 1] << 8 | file[at + 2] << 16 | uint32_t{file[at + 3]} << 24; };
  auto u16 = [&](size_t at) { return static_cast<uint16_t>(file[at] | file[at + 1] << 8); };
  size_t at = 12, data_at = 0, data_size = 0;
  int channels = 0, rate = 0, bits = 0;
  while (at + 8 <= file.size()) {
    const std::string id(file.begin() + static_cast<std::ptrdiff_t>(at), file.begin() + static_cast<std::ptrdiff_t>(at) + 4);
    const size_t size = u32(at + 4);
    if (id == "fmt ") channels = u16(at + 10), rate = static_cast<int>(u32(at + 12)), bits = u16(at + 22);
    if (id == "data") {
      data_at = at + 8;
      data_size = std::min(size, file.size() - data_at);  // espeak-ng may leave the size unset
      break;
    }
    at += 8 + size + (size & 1);
  }
  ASSERT_EQ(bits, 16);
  ASSERT_EQ(channels, 1);
  const media::Audio a = media::decode_audio(file.data(), file.size(), wav.string());
  EXPECT_EQ(a.rate, rate);
  EXPECT_EQ(a.rate, 22050);
  ASSERT_EQ(a.samples.size(0), static_cast<int64_t>(data_size / 2));
  ASSERT_EQ(a.samples.size(1), 1);
  for (int64_t i = 0; i < a.samples.size(0); i += 97)  // libsndfile scales 16-bit PCM by 1/32768
    ASSERT_EQ(a.samples[i][0].item<float>(), static_cast<int16_t>(u16(data_at + 2 * static_cast<size_t>(i))) / 32768.0f) << i;

  media::AudioOptions o;  // 16 kHz
  at::Tensor t = media::audio_tensor(a, o, "hello.wav");
  EXPECT_EQ(t.dim(), 1);
  EXPECT_EQ(t.size(0), std::llround(a.samples.size(0) * 16000.0 / 22050.0));
  o.max_seconds = 0.5;
  EXPECT_EQ(media::audio_tensor(a, o, "hello.wav").size(0), 8000);
  o.sample_rate = 0;  // keep 22050: the samples themselves
  at::Tensor same = media::audio_tensor(a, o, "hello.wav");
  EXPECT_TRUE(at::equal(same, a.samples.select(1, 0).slice(0, 0, 11025)));
}

TEST(MediaAudio, StereoMixdownAndResampledTone) {
  const Bytes wav = pcm16_wav(8000, 8000, 0.1, 2);
  const media::Audio a = media::decode_audio(wav.data(), wav.size(), "tone.wav");
  ASSERT_EQ(a.samples.sizes(), at::IntArrayRef({8000, 2}));
  media::AudioOptions keep;
  keep.sample_rate = 0;
  at::Tensor mono = media::audio_tensor(a, keep, "tone.wav");
  EXPECT_TRUE(at::allclose(mono, a.samples.mean(1)));
  media::AudioOptions up;
  up.sample_rate = 16000;
  at::Tensor t = media::audio_tensor(a, up, "tone.wav");
  EXPECT_EQ(t.size(0), 16000);
  // A band-limited tone survives 2x upsampling: every other output sample ~ the input.
  EXPECT_LT((t.slice(0, 1000, 15000, 2) - mono.slice(0, 500, 7500)).abs().max().item<float>(), 0.02f);
}

TEST(MediaAudio, FlacIsLossless) {
  const auto dir = test::temp_dir("media", "flac");
  const fs::path path = dir / "tone.flac";
  SF_INFO info{};
  info.samplerate = 48000;
  info.channels = 1;
  info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  std::vector<short> pcm(4800);
  for (size_t i = 0; i < pcm.size(); ++i) pcm[i] = static_cast<short>(std::lround(9000 * std::sin(0.01 * static_cast<double>(i))));
  sf_writef_short(f, pcm.data(), static_cast<sf_count_t>(pcm.size()));
  sf_close(f);
  const Bytes b = read_bytes(path);
  const media::Audio a = media::decode_audio(b.data(), b.size(), path.string());
  EXPECT_EQ(a.rate, 48000);
  ASSERT_EQ(a.samples.size(0), 4800);
  for (size_t i = 0; i < pcm.size(); ++i) ASSERT_EQ(a.samples[static_cast<int64_t>(i)][0].item<float>(), pcm[i] / 32768.0f) << i;
  media::AudioOptions o;  // 48 kHz -> 16 kHz
  EXPECT_EQ(media::audio_tensor(a, o, "tone.flac").size(0), 1600);
}

TEST(MediaAudio, TruncatedOggAndDamagedAudioAreErrorsNamingTheSource) {
  const auto dir = test::temp_dir("media", "ogg");
  write_ogg(dir / "tone.ogg", 22050, 22050);
  const Bytes ogg = read_bytes(dir / "tone.ogg");
  const media::Audio whole = media::decode_audio(ogg.data(), ogg.size(), "tone.ogg");
  EXPECT_EQ(whole.samples.size(0), 22050);
  EXPECT_EQ(whole.rate, 22050);
  for (size_t cut : {ogg.size() * 3 / 4, ogg.size() / 2, size_t{200}, size_t{10}}) {
    const Bytes part(ogg.begin(), ogg.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_ERROR_MENTIONS(media::decode_audio(part.data(), part.size(), "dir/tone_cut.ogg"), "dir/tone_cut.ogg");
  }
  const Bytes junk = {'R', 'I', 'F', 'F', 1, 2, 3, 4, 'W', 'A', 'V', 'E', 0, 0};
  EXPECT_ERROR_MENTIONS(media::decode_audio(junk.data(), junk.size(), "junk.wav"), "junk.wav");
  EXPECT_ERROR_MENTIONS(media::decode_audio(nullptr, 0, "empty.wav"), "empty.wav");
  // Debian's Tux Paint stamps: a real spoken description (Ogg Vorbis, 44.1 kHz).
  const std::string real = "/usr/share/tuxpaint/stamps/animals/birds/blackbird_desc.ogg";
  if (fs::exists(real)) {
    const Bytes b = read_bytes(real);
    const media::Audio a = media::decode_audio(b.data(), b.size(), real);
    EXPECT_EQ(a.rate, 44100);
    EXPECT_GT(a.samples.size(0), 44100);
    const Bytes part(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(b.size() / 2));
    EXPECT_ERROR_MENTIONS(media::decode_audio(part.data(), part.size(), real), real);
  }
}

TEST(MediaText, LinesAndByteTokens) {
  const std::string stamp = "\xEF\xBB\xBF" "A clock face.\r\nach.utf8=Wang cawa.\nfr.utf8=Une horloge.\n\n";
  const auto* p = reinterpret_cast<const uint8_t*>(stamp.data());
  EXPECT_EQ(media::select_text(p, stamp.size(), "first"), "A clock face.");
  EXPECT_EQ(media::select_text(p, stamp.size(), "all"), "A clock face.\nach.utf8=Wang cawa.\nfr.utf8=Une horloge.");
  auto bytes = media::Tokenizer::open("bytes");
  EXPECT_EQ(bytes->encode("Ab\xC3\xA9"), (std::vector<int64_t>{66, 99, 0xC3 + 1, 0xA9 + 1}));
  EXPECT_EQ(bytes->decode({66, 99, 0, 0}), "Ab");
  EXPECT_THROW(bytes->decode({300}), std::invalid_argument);
  EXPECT_EQ(bytes->pad_id(), 0);
}

TEST(MediaText, SentencePieceModelsLoadOrNameTheFile) {
  const auto dir = test::temp_dir("media", "spm");
  write_text(dir / "bad.model", "this is not a protobuf");
  EXPECT_ERROR_MENTIONS(media::Tokenizer::open((dir / "bad.model").string()), (dir / "bad.model").string(), "does not load");
  EXPECT_ERROR_MENTIONS(media::Tokenizer::open((dir / "missing.model").string()), (dir / "missing.model").string());
  if (!have_program("spm_train")) GTEST_SKIP() << "spm_train (sentencepiece) not installed";
  std::string corpus;
  for (int i = 0; i < 200; ++i)
    corpus += "a picture of a " + std::string(i % 2 ? "red " : "blue ") + (i % 3 ? "bird" : "clock") + " number " + std::to_string(i % 10) + "\n";
  write_text(dir / "corpus.txt", corpus);
  ASSERT_EQ(std::system(("spm_train --input=" + (dir / "corpus.txt").string() + " --model_prefix=" + (dir / "tiny").string() +
                         " --vocab_size=40 --hard_vocab_limit=false --minloglevel=2 >/dev/null 2>&1").c_str()), 0);
  auto sp = media::Tokenizer::open((dir / "tiny.model").string());
  const std::vector<int64_t> ids = sp->encode("a picture of a red clock");
  EXPECT_FALSE(ids.empty());
  EXPECT_EQ(sp->decode(ids), "a picture of a red clock");
  EXPECT_GT(sp->vocab_size(), 10);
  EXPECT_THROW(sp->decode({sp->vocab_size()}), std::invalid_argument);
}

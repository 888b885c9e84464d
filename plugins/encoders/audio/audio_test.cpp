// plugins/encoders/audio/audio_test.cpp — the audio encoder: its log-mel spectrogram against a
// direct DFT and filterbank written here in double precision; frame counts and option errors;
// then the plugin, loaded from the build: padding and the other clips of a batch do not change a
// clip's embedding (transformer and conv-only), silence and empty clips stay finite, gradients
// reach every parameter, bad inputs are named.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <functional>
#include <tuple>
#include <stdexcept>
#include <string>
#include <vector>

#include "logmel.hpp"
#include "support.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"

namespace au = tessera::audio;

namespace {

// ---- an independent log-mel: explicit sums in double --------------------------------------------
std::vector<double> ref_log_mel(const std::vector<double>& x, const au::LogMelOptions& o, int64_t* frames_out) {
  const int64_t n_fft = o.n_fft, half = n_fft / 2, bins = n_fft / 2 + 1, len = static_cast<int64_t>(x.size());
  // Hann (periodic) of win_length, centred in n_fft.
  std::vector<double> w(static_cast<size_t>(n_fft), 0.0);
  const int64_t left = (n_fft - o.win_length) / 2;
  for (int64_t i = 0; i < o.win_length; ++i)
    w[static_cast<size_t>(left + i)] = 0.5 - 0.5 * std::cos(2.0 * M_PI * static_cast<double>(i) / static_cast<double>(o.win_length));
  // Mel points, HTK.
  auto mel = [](double f) { return 2595.0 * std::log10(1.0 + f / 700.0); };
  auto hz = [](double m) { return 700.0 * (std::pow(10.0, m / 2595.0) - 1.0); };
  std::vector<double> pts;
  for (int64_t i = 0; i < o.n_mels + 2; ++i)
    pts.push_back(hz(mel(o.f_min) + (mel(o.f_max) - mel(o.f_min)) * static_cast<double>(i) / static_cast<double>(o.n_mels + 1)));
  // Frames: sample s of frame t is x[t * hop + s - half], zero outside the clip.
  const int64_t frames = len == 0 ? 0 : 1 + (len + 2 * half - n_fft) / o.hop_length;
  *frames_out = frames;
  std::vector<double> out(static_cast<size_t>(frames * o.n_mels));
  for (int64_t t = 0; t < frames; ++t) {
    std::vector<double> power(static_cast<size_t>(bins));
    for (int64_t k = 0; k < bins; ++k) {
      double re = 0, im = 0;
      for (int64_t s = 0; s < n_fft; ++s) {
        const int64_t i = t * o.hop_length + s - half;
        const double v = i >= 0 && i < len ? x[static_cast<size_t>(i)] * w[static_cast<size_t>(s)] : 0.0;
        const double a = -2.0 * M_PI * static_cast<double>(k * s) / static_cast<double>(n_fft);
        re += v * std::cos(a), im += v * std::sin(a);
      }
      power[static_cast<size_t>(k)] = re * re + im * im;
    }
    for (int64_t m = 0; m < o.n_mels; ++m) {
      double e = 0;
      for (int64_t k = 0; k < bins; ++k) {
        const double f = static_cast<double>(k) * static_cast<double>(o.sample_rate) / static_cast<double>(n_fft);
        const double l = pts[static_cast<size_t>(m)], c = pts[static_cast<size_t>(m + 1)], r = pts[static_cast<size_t>(m + 2)];
        double tri = 0;
        if (f > l && f <= c) tri = (f - l) / (c - l);
        else if (f > c && f < r) tri = (r - f) / (r - c);
        e += tri * power[static_cast<size_t>(k)];
      }
      out[static_cast<size_t>(t * o.n_mels + m)] = std::log(e + o.log_eps);
    }
  }
  return out;
}

// Two tones and seeded noise, `n` samples at `rate`.
std::vector<double> test_signal(int64_t n, int64_t rate, uint32_t seed) {
  std::vector<double> x(static_cast<size_t>(n));
  uint32_t s = seed;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    const double t = static_cast<double>(i) / static_cast<double>(rate);
    x[static_cast<size_t>(i)] = 0.5 * std::sin(2 * M_PI * 440.0 * t) + 0.2 * std::sin(2 * M_PI * 1870.0 * t + 0.3) +
                                0.05 * (static_cast<double>(s >> 8) / 16777216.0 - 0.5);
  }
  return x;
}

std::unique_ptr<tessera::EncoderInstance> make_audio(const std::string& keys) {
  tessera::Config cfg = tessera::Config::parse("[[encoder]]\nplugin = \"audio\"\n" + keys, "audio.toml");
  auto lib = tessera::test::plugin_registry().get("audio", TSR_KIND_ENCODER, "test");
  tessera::Schema schema = tessera::encoder_slot_schema();
  for (const auto& k : lib->schema().keys) schema.keys.push_back(k);
  return std::make_unique<tessera::EncoderInstance>(lib, cfg.resolve(*cfg.tables("encoder")[0], schema, "[[encoder]] #1"),
                                                    "audio");
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(LogMel, MatchesADirectDftAndFilterbankInDouble) {
  for (const auto& [n_fft, win, hop, mels, rate] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>>{
           {400, 0, 160, 40, 16000}, {256, 200, 128, 32, 8000}, {101, 0, 37, 20, 16000}}) {
    au::LogMelOptions o;
    o.n_fft = n_fft, o.win_length = win, o.hop_length = hop, o.n_mels = mels, o.sample_rate = rate;
    o.f_min = 20.0;
    o.normalize = false;
    o.resolve();
    const std::vector<int64_t> lens{3000, 1777, 0, 1};
    const int64_t n = 3100;  // padded past the longest clip
    at::Tensor wave = at::randn({4, n}) * 10;  // padding garbage: must not matter
    for (size_t b = 0; b < lens.size(); ++b) {
      const auto x = test_signal(lens[b], rate, static_cast<uint32_t>(b + 1));
      for (int64_t i = 0; i < lens[b]; ++i) wave[static_cast<int64_t>(b)][i] = x[static_cast<size_t>(i)];
    }
    const au::LogMel got = au::log_mel(wave, at::tensor(lens, at::kLong), o, au::mel_filterbank(o), au::stft_window(o));
    ASSERT_EQ(got.features.size(0), 4);
    ASSERT_EQ(got.features.size(2), mels);
    EXPECT_EQ(got.features.size(1), au::frame_count(n, o));
    for (size_t b = 0; b < lens.size(); ++b) {
      int64_t frames = 0;
      const auto want = ref_log_mel(test_signal(lens[b], rate, static_cast<uint32_t>(b + 1)), o, &frames);
      EXPECT_EQ(got.frames[static_cast<int64_t>(b)].item<int64_t>(), frames);
      EXPECT_EQ(au::frame_count(lens[b], o), frames);
      double worst = 0;
      const at::Tensor f = got.features[static_cast<int64_t>(b)].to(at::kDouble);
      for (int64_t t = 0; t < frames; ++t)
        for (int64_t m = 0; m < mels; ++m)
          worst = std::max(worst, std::abs(f[t][m].item<double>() - want[static_cast<size_t>(t * mels + m)]));
      EXPECT_LE(worst, 1e-4) << "n_fft " << n_fft << " clip " << b;
      // Past the clip's frames: zeros.
      if (frames < f.size(0)) EXPECT_EQ(f.narrow(0, frames, f.size(0) - frames).abs().max().item<double>(), 0.0);
    }
  }
}

TEST(LogMel, OptionsAreCheckedNamingTheKey) {
  auto error = [](au::LogMelOptions o) {
    try {
      o.resolve();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  au::LogMelOptions o;
  o.n_mels = 300;
  EXPECT_TRUE(contains(error(o), "n_mels = 300 needs at most n_fft / 2 + 1 = 201")) << error(o);
  o = {};
  o.win_length = 500;
  EXPECT_TRUE(contains(error(o), "win_length = 500")) << error(o);
  o = {};
  o.f_max = 9000;
  EXPECT_TRUE(contains(error(o), "f_max = 9000")) << error(o);
  o = {};
  o.f_min = 8000;
  EXPECT_TRUE(contains(error(o), "f_min = 8000")) << error(o);
  // Silence normalises to zeros, not NaN.
  o = {};
  o.resolve();
  const au::LogMel s = au::log_mel(at::zeros({2, 4000}), at::tensor({4000, 0}, at::kLong), o, au::mel_filterbank(o), au::stft_window(o));
  EXPECT_TRUE(at::isfinite(s.features).all().item<bool>());
  EXPECT_EQ(s.features.abs().max().item<float>(), 0.0f);
  EXPECT_EQ(s.frames[1].item<int64_t>(), 0);
}

TEST(AudioEncoder, PaddingAndTheOtherClipsDoNotChangeAnEmbedding) {
  at::manual_seed(11);
  const std::vector<int64_t> lens{16000, 5231, 12000, 800};
  for (const char* keys : {"n_layers = 2\n", "n_layers = 0\n", "n_layers = 1\npositions = \"rotary\"\nconv_layers = 3\n",
                           "n_layers = 1\nnormalize = \"none\"\nattention = \"explicit\"\n"}) {
    auto enc = make_audio(std::string("d_model = 32\nn_heads = 4\nconv_channels = 24\nn_mels = 40\nout_features = 16\n"
                                      "dropout = 0.1\n") + keys);
    enc->set_training(false);
    at::Tensor wave = at::randn({4, 17000}) * 3;  // garbage padding
    std::vector<at::Tensor> alone;
    for (size_t b = 0; b < lens.size(); ++b) {
      const auto x = test_signal(lens[b], 16000, static_cast<uint32_t>(7 * b + 3));
      const at::Tensor clip = at::tensor(x, at::kDouble).to(at::kFloat);
      wave[static_cast<int64_t>(b)].narrow(0, 0, lens[b]).copy_(clip);
      tessera::TensorMap one{{"audio", clip.unsqueeze(0)}};  // no lengths: the clip is the whole row
      enc->forward(one);
      alone.push_back(one.at("audio_emb")[0]);
    }
    tessera::TensorMap batch{{"audio", wave}, {"audio_len", at::tensor(lens, at::kLong)}};
    enc->forward(batch);
    const at::Tensor emb = batch.at("audio_emb");
    ASSERT_EQ(emb.sizes(), (at::IntArrayRef{4, 16})) << keys;
    for (size_t b = 0; b < lens.size(); ++b)
      EXPECT_LE((emb[static_cast<int64_t>(b)] - alone[b]).abs().max().item<double>(), 1e-5) << keys << " clip " << b;
    EXPECT_FALSE(at::allclose(emb[0], emb[1])) << keys;
    // The same clips with other padding and in another order.
    at::Tensor wave2 = at::zeros({2, 16500});
    wave2[0].narrow(0, 0, lens[3]).copy_(wave[3].narrow(0, 0, lens[3]));
    wave2[1].narrow(0, 0, lens[0]).copy_(wave[0].narrow(0, 0, lens[0]));
    tessera::TensorMap batch2{{"audio", wave2}, {"audio_len", at::tensor({lens[3], lens[0]}, at::kLong)}};
    enc->forward(batch2);
    EXPECT_LE((batch2.at("audio_emb")[0] - emb[3]).abs().max().item<double>(), 1e-5) << keys;
    EXPECT_LE((batch2.at("audio_emb")[1] - emb[0]).abs().max().item<double>(), 1e-5) << keys;
  }
}

TEST(AudioEncoder, SilenceAndEmptyClipsStayFiniteAndGradientsReachEveryParameter) {
  auto enc = make_audio("d_model = 32\nn_heads = 4\nconv_channels = 16\nn_mels = 32\nout_features = 8\nn_layers = 1\n");
  at::Tensor wave = at::randn({3, 8000}) * 0.1;
  wave[1].zero_();
  tessera::TensorMap batch{{"audio", wave}, {"audio_len", at::tensor({8000, 8000, 0}, at::kLong)}};
  enc->forward(batch);
  const at::Tensor emb = batch.at("audio_emb");
  EXPECT_TRUE(at::isfinite(emb).all().item<bool>());
  const at::Tensor up = at::randn_like(emb);
  (emb * up).sum().backward();
  std::vector<at::Tensor> first;
  for (auto& [name, p] : enc->parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_TRUE(at::isfinite(p.grad()).all().item<bool>()) << name;
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0) << name;
    first.push_back(p.grad().clone());
    p.mutable_grad().zero_();
  }
  // The same backward again gives the same gradients, of a sane size (the exact GELU's backward
  // once gave 1e10..inf at random here).
  for (int repeat = 0; repeat < 3; ++repeat) {
    tessera::TensorMap again{{"audio", wave}, {"audio_len", at::tensor({8000, 8000, 0}, at::kLong)}};
    enc->forward(again);
    (again.at("audio_emb") * up).sum().backward();
    size_t i = 0;
    for (auto& [name, p] : enc->parameters()) {
      EXPECT_TRUE(at::allclose(p.grad(), first[i], 1e-4, 1e-6)) << name << " repeat " << repeat;
      EXPECT_LT(p.grad().abs().max().item<double>(), 1e4) << name;
      p.mutable_grad().zero_();
      ++i;
    }
  }
  EXPECT_GT(enc->flops(batch), 0.0);
}

TEST(AudioEncoder, BadOptionsAndInputsAreNamed) {
  auto error = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  std::string e = error([] { make_audio("n_mels = 300\n"); });
  EXPECT_TRUE(contains(e, "n_mels = 300")) << e;
  auto enc = make_audio("d_model = 16\nn_heads = 2\nn_layers = 1\nmax_frames = 10\nn_mels = 16\n");
  tessera::TensorMap bad_len{{"audio", at::zeros({2, 800})}, {"audio_len", at::tensor({800, 801}, at::kLong)}};
  e = error([&] { enc->forward(bad_len); });
  EXPECT_TRUE(contains(e, "'audio_len' holds a length outside [0, 800]")) << e;
  tessera::TensorMap too_long{{"audio", at::zeros({1, 16000})}};
  e = error([&] { enc->forward(too_long); });
  EXPECT_TRUE(contains(e, "more than max_frames = 10")) << e;
  EXPECT_TRUE(contains(e, "1.0")) << e;  // the clip's seconds
  tessera::TensorMap wrong{{"audio", at::zeros({2, 3, 4})}};
  e = error([&] { enc->forward(wrong); });
  EXPECT_TRUE(contains(e, "'audio' must be (B, N) float samples")) << e;
}


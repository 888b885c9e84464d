// plugins/encoders/audio/logmel.cpp — log-mel spectrograms of padded clips (see logmel.hpp).
#include "logmel.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace tessera::audio {
namespace {

double hz_to_mel(double f) { return 2595.0 * std::log10(1.0 + f / 700.0); }
double mel_to_hz(double m) { return 700.0 * (std::pow(10.0, m / 2595.0) - 1.0); }

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument(what); }

}  // namespace

void LogMelOptions::resolve() {
  if (sample_rate < 1) bad("sample_rate must be >= 1 Hz, got " + std::to_string(sample_rate));
  if (n_fft < 2) bad("n_fft must be >= 2, got " + std::to_string(n_fft));
  if (win_length == 0) win_length = n_fft;
  if (win_length < 1 || win_length > n_fft)
    bad("win_length = " + std::to_string(win_length) + " must be in [1, n_fft = " + std::to_string(n_fft) + "] (0 = n_fft)");
  if (hop_length < 1) bad("hop_length must be >= 1, got " + std::to_string(hop_length));
  const int64_t bins = n_fft / 2 + 1;
  if (n_mels < 1 || n_mels > bins)
    bad("n_mels = " + std::to_string(n_mels) + " needs at most n_fft / 2 + 1 = " + std::to_string(bins) +
        " frequency bins; raise n_fft or lower n_mels");
  const double nyquist = static_cast<double>(sample_rate) / 2.0;
  if (f_max == 0.0) f_max = nyquist;
  if (f_max > nyquist) bad("f_max = " + std::to_string(f_max) + " Hz is above the Nyquist frequency " + std::to_string(nyquist) + " Hz of sample_rate");
  if (f_min < 0.0 || f_min >= f_max) bad("f_min = " + std::to_string(f_min) + " Hz must be in [0, f_max = " + std::to_string(f_max) + ")");
  if (!(log_eps > 0.0)) bad("log_eps must be > 0");
}

int64_t frame_count(int64_t samples, const LogMelOptions& o) {
  if (samples <= 0) return 0;
  return 1 + (samples + 2 * (o.n_fft / 2) - o.n_fft) / o.hop_length;
}

at::Tensor mel_filterbank(const LogMelOptions& o) {
  const int64_t bins = o.n_fft / 2 + 1;
  const double lo = hz_to_mel(o.f_min), hi = hz_to_mel(o.f_max);
  std::vector<double> hz(static_cast<size_t>(o.n_mels + 2));
  for (int64_t i = 0; i < o.n_mels + 2; ++i)
    hz[static_cast<size_t>(i)] = mel_to_hz(lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(o.n_mels + 1));
  at::Tensor fb = at::zeros({bins, o.n_mels}, at::kDouble);
  auto a = fb.accessor<double, 2>();
  for (int64_t k = 0; k < bins; ++k) {
    const double f = static_cast<double>(k) * static_cast<double>(o.sample_rate) / static_cast<double>(o.n_fft);
    for (int64_t m = 0; m < o.n_mels; ++m) {
      const double l = hz[static_cast<size_t>(m)], c = hz[static_cast<size_t>(m + 1)], r = hz[static_cast<size_t>(m + 2)];
      const double up = (f - l) / (c - l), down = (r - f) / (r - c);
      a[k][m] = std::max(0.0, std::min(up, down));
    }
  }
  return fb.to(at::kFloat);
}

at::Tensor stft_window(const LogMelOptions& o) {
  at::Tensor w = at::hann_window(o.win_length, /*periodic=*/true, at::TensorOptions(at::kFloat));
  if (o.win_length == o.n_fft) return w;
  const int64_t left = (o.n_fft - o.win_length) / 2;
  return at::constant_pad_nd(w, {left, o.n_fft - o.win_length - left}, 0.0);
}

LogMel log_mel(const at::Tensor& wave, const at::Tensor& lengths, const LogMelOptions& o, const at::Tensor& fbank,
               const at::Tensor& window) {
  TORCH_CHECK(wave.dim() == 2 && lengths.dim() == 1 && lengths.size(0) == wave.size(0),
              "log_mel expects (B, N) samples and (B,) lengths");
  const int64_t b = wave.size(0), n = std::max<int64_t>(wave.size(1), 1);
  const auto dev = wave.device();
  at::Tensor x = wave.to(at::kFloat);
  if (x.size(1) == 0) x = at::zeros({b, 1}, x.options());
  const at::Tensor len = lengths.to(dev, at::kLong);
  x = x * at::arange(n, len.options()).unsqueeze(0).lt(len.unsqueeze(1)).to(at::kFloat);  // past the end: 0
  x = at::constant_pad_nd(x, {o.n_fft / 2, o.n_fft / 2}, 0.0);
  const at::Tensor spec = at::stft(x, o.n_fft, o.hop_length, o.n_fft, window.to(dev), /*normalized=*/false,
                                   /*onesided=*/true, /*return_complex=*/true);  // (B, F, T)
  const at::Tensor power = at::view_as_real(spec).pow(2).sum(-1);                  // |X|^2, (B, F, T)
  at::Tensor mel = at::matmul(power.transpose(1, 2), fbank.to(dev));               // (B, T, n_mels)
  mel = at::log(mel + o.log_eps);
  const int64_t t = mel.size(1);
  // Valid frames: the frame count of each clip's own length.
  at::Tensor frames = at::where(len.gt(0), 1 + at::div(len + 2 * (o.n_fft / 2) - o.n_fft, o.hop_length, "floor"),
                                at::zeros_like(len));
  const at::Tensor valid = at::arange(t, len.options()).unsqueeze(0).lt(frames.unsqueeze(1)).unsqueeze(-1).to(at::kFloat);
  if (o.normalize) {
    const at::Tensor count = valid.sum(1, /*keepdim=*/true).clamp_min(1.0);  // (B, 1, 1)
    const at::Tensor mean = (mel * valid).sum(1, true) / count;
    const at::Tensor var = ((mel - mean).pow(2) * valid).sum(1, true) / count;
    mel = (mel - mean) / var.sqrt().clamp_min(1e-3);
  }
  return {mel * valid, frames};
}

}  // namespace tessera::audio

// plugins/encoders/audio/logmel.hpp — the audio encoder's front end: padded waveforms to log-mel
// spectrograms (at::stft, an HTK mel filterbank, log compression, optional per-clip
// normalisation), with the valid frames of each clip. A clip's features do not depend on the
// padding after it: samples past its length are zeroed, every frame is zero-padded the same way
// (n_fft / 2 on each side of the signal, as torch.stft's center = true but with zeros), and the
// frames past its end are set to zero.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace tessera::audio {

struct LogMelOptions {
  int64_t sample_rate = 16000;  // Hz of the incoming samples
  int64_t n_fft = 400;          // FFT size (samples)
  int64_t win_length = 0;       // Hann window length, centred in the FFT frame; 0 = n_fft
  int64_t hop_length = 160;     // samples between frames
  int64_t n_mels = 64;
  double f_min = 0.0, f_max = 0.0;  // filterbank range in Hz; f_max 0 = sample_rate / 2
  double log_eps = 1e-6;            // log(mel power + log_eps)
  bool normalize = true;            // per clip and mel bin: zero mean, unit std over its valid frames

  // Resolves win_length and f_max and checks every field; throws std::invalid_argument naming the
  // key ("n_mels = 300 needs at most n_fft / 2 + 1 = 201 frequency bins ...").
  void resolve();
};

// Frames of a clip of `samples` samples: 0 for an empty clip, else 1 + (samples + 2 (n_fft / 2)
// - n_fft) / hop_length (integer division), as at::stft of the zero-padded signal gives.
int64_t frame_count(int64_t samples, const LogMelOptions& o);

// The HTK mel filterbank: (n_fft / 2 + 1, n_mels) float32, filter m a triangle over FFT bin
// frequencies k * sample_rate / n_fft between mel points m, m + 1 and m + 2 of n_mels + 2 points
// equally spaced in mel = 2595 log10(1 + f / 700) from f_min to f_max; peak 1, no area
// normalisation (torchaudio's melscale_fbanks with norm = None, mel_scale = "htk").
at::Tensor mel_filterbank(const LogMelOptions& o);

// The periodic Hann window of win_length, zero-padded to n_fft and centred (torch.stft's
// convention for win_length < n_fft); float32.
at::Tensor stft_window(const LogMelOptions& o);

struct LogMel {
  at::Tensor features;  // (B, T, n_mels) float32; zero past each clip's frames
  at::Tensor frames;    // (B,) int64 valid frames per clip
};

// wave: (B, N) float (any float dtype; computed in float32), lengths: (B,) int64 in [0, N].
// fbank and window from mel_filterbank / stft_window of the same (resolved) options.
LogMel log_mel(const at::Tensor& wave, const at::Tensor& lengths, const LogMelOptions& o, const at::Tensor& fbank,
               const at::Tensor& window);

}  // namespace tessera::audio

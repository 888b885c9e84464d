// media/audio.hpp — WAV / FLAC / Ogg Vorbis (anything libsndfile reads) decoded from memory, and
// the samples -> tensor step every reader shares: mono mixdown, resampling (libsamplerate),
// truncation.
#pragma once
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tessera::media {

// Decoded audio longer than this many samples (all channels) is refused.
constexpr int64_t kMaxAudioSamples = int64_t{1} << 28;

struct Audio {
  at::Tensor samples;  // (frames, channels) f32 in [-1, 1], as libsndfile scales them
  int64_t rate = 0;    // Hz
};

// Throws std::runtime_error naming `source` for a format libsndfile does not know, a damaged
// stream, or a truncated one (fewer frames than the header promises; an Ogg stream without its
// last page, whose length is then unknown).
Audio decode_audio(const uint8_t* data, size_t size, const std::string& source);

struct AudioOptions {
  int64_t sample_rate = 16000;  // resample to this (0 = keep the file's rate)
  double max_seconds = 0.0;     // truncate to this many seconds (0 = no limit)
};

// -> (n,) f32 mono: the mean of the channels, resampled with libsamplerate's SRC_SINC_MEDIUM_QUALITY
// to round(frames * sample_rate / rate) samples, then cut to round(max_seconds * sample_rate).
at::Tensor audio_tensor(const Audio& audio, const AudioOptions& options, const std::string& source);

}  // namespace tessera::media

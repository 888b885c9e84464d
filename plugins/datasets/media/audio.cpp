// media/audio.cpp — decode_audio through sf_open_virtual over a memory buffer; audio_tensor with
// libsamplerate's src_simple (each call its own converter: safe from any thread).
#include "media/audio.hpp"

#include <samplerate.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace tessera::media {
namespace {

struct Memory {
  const uint8_t* data;
  sf_count_t size, pos;
};

sf_count_t mem_length(void* user) { return static_cast<Memory*>(user)->size; }
sf_count_t mem_seek(sf_count_t offset, int whence, void* user) {
  auto* m = static_cast<Memory*>(user);
  const sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->size;
  const sf_count_t p = base + offset;
  if (p < 0 || p > m->size) return -1;
  return m->pos = p;
}
sf_count_t mem_read(void* out, sf_count_t count, void* user) {
  auto* m = static_cast<Memory*>(user);
  const sf_count_t n = std::max<sf_count_t>(0, std::min(count, m->size - m->pos));
  if (n > 0) std::memcpy(out, m->data + m->pos, static_cast<size_t>(n));
  m->pos += n;
  return n;
}
sf_count_t mem_write(const void*, sf_count_t, void*) { return 0; }
sf_count_t mem_tell(void* user) { return static_cast<Memory*>(user)->pos; }

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw std::runtime_error(source + ": " + what);
}

}  // namespace

Audio decode_audio(const uint8_t* data, size_t size, const std::string& source) {
  if (size == 0) fail(source, "empty file, not audio");
  Memory mem{data, static_cast<sf_count_t>(size), 0};
  SF_VIRTUAL_IO io{mem_length, mem_seek, mem_read, mem_write, mem_tell};
  SF_INFO info{};
  std::unique_ptr<SNDFILE, int (*)(SNDFILE*)> file(sf_open_virtual(&io, SFM_READ, &info, &mem), sf_close);
  // sf_strerror(NULL) reads libsndfile's global error: in a race between threads the message
  // may be another file's, the failure itself is not.
  if (!file) fail(source, std::string("not audio libsndfile can read: ") + sf_strerror(nullptr));
  if (info.channels <= 0 || info.channels > 256 || info.samplerate <= 0)
    fail(source, "audio with " + std::to_string(info.channels) + " channels at " + std::to_string(info.samplerate) + " Hz refused");
  if (info.frames == SF_COUNT_MAX || info.frames < 0)
    fail(source, "its length is unknown: the stream is truncated or damaged (an Ogg file without its last page?)");
  if (info.frames > kMaxAudioSamples / info.channels)
    fail(source, std::to_string(info.frames) + " frames refused (limit " + std::to_string(kMaxAudioSamples) + " samples)");
  Audio out;
  out.rate = info.samplerate;
  out.samples = at::empty({static_cast<int64_t>(info.frames), info.channels}, at::kFloat);
  const sf_count_t got = info.frames ? sf_readf_float(file.get(), out.samples.data_ptr<float>(), info.frames) : 0;
  if (sf_error(file.get()) != SF_ERR_NO_ERROR) fail(source, std::string("damaged audio: ") + sf_strerror(file.get()));
  if (got != info.frames)
    fail(source, "truncated or damaged audio: decoded " + std::to_string(got) + " of " + std::to_string(info.frames) + " frames");
  return out;
}

at::Tensor audio_tensor(const Audio& audio, const AudioOptions& o, const std::string& source) {
  TORCH_CHECK(audio.samples.dim() == 2 && audio.samples.scalar_type() == at::kFloat, "audio_tensor expects (frames, channels) f32");
  const int64_t rate = o.sample_rate > 0 ? o.sample_rate : audio.rate;
  const double ratio = static_cast<double>(rate) / static_cast<double>(audio.rate);
  if (ratio > 256.0 || ratio < 1.0 / 256.0)
    fail(source, "cannot resample " + std::to_string(audio.rate) + " Hz to " + std::to_string(rate) + " Hz (ratio beyond 256)");
  at::Tensor mono = audio.samples.size(1) == 1 ? audio.samples.select(1, 0) : audio.samples.mean(1);
  mono = mono.contiguous();
  int64_t keep = -1;  // output samples kept, -1 = all
  if (o.max_seconds > 0) {
    keep = static_cast<int64_t>(std::llround(o.max_seconds * static_cast<double>(rate)));
    // Only the input the kept output depends on (plus the resampler's filter reach).
    const auto need = static_cast<int64_t>(std::ceil(o.max_seconds * static_cast<double>(audio.rate))) +
                      (rate == audio.rate ? 0 : std::max<int64_t>(1024, audio.rate / 10));
    if (need < mono.size(0)) mono = mono.slice(0, 0, need).contiguous();
  }
  at::Tensor out = mono;
  if (rate != audio.rate && mono.size(0) > 0) {
    const auto n_out = static_cast<int64_t>(std::llround(static_cast<double>(mono.size(0)) * ratio));
    at::Tensor buf = at::zeros({n_out + 16}, at::kFloat);
    SRC_DATA d{};
    d.data_in = mono.data_ptr<float>();
    d.input_frames = static_cast<long>(mono.size(0));
    d.data_out = buf.data_ptr<float>();
    d.output_frames = static_cast<long>(buf.size(0));
    d.src_ratio = ratio;
    d.end_of_input = 1;
    const int err = src_simple(&d, SRC_SINC_MEDIUM_QUALITY, 1);
    if (err != 0) fail(source, std::string("resampling failed: ") + src_strerror(err));
    out = buf.slice(0, 0, n_out);  // src may stop a few frames short: those stay 0
    if (d.output_frames_gen < n_out) out.slice(0, d.output_frames_gen).zero_();
  }
  if (keep >= 0 && keep < out.size(0)) out = out.slice(0, 0, keep);
  return out.contiguous();
}

}  // namespace tessera::media

// plugins/encoders/audio/audio.cpp — encoder plugin "audio": padded waveforms -> log-mel
// spectrogram (computed here, logmel.hpp) -> a strided Conv1d front end -> transformer blocks of
// the shared library with the padding mask (none for the conv-only variant, n_layers = 0) ->
// final norm -> masked mean over the clip's frames -> Linear. The embedding of a clip does not
// depend on the padding after it or on the other clips of the batch.
#include <tessera/plugin.hpp>

#include <cmath>
#include <stdexcept>

#include "logmel.hpp"
#include "transformer.hpp"

namespace {

namespace sdk = tessera::sdk;
namespace tf = tessera::transformer;
namespace au = tessera::audio;

const tsr_config_key kKeys[] = {
    sdk::key_string("input", "\"audio\"", "batch tensor to read: (B, N) float mono samples, padded at the end"),
    sdk::key_string("lengths", "\"\"",
                    "batch tensor of the clips' lengths in samples, (B,) int64; \"\" = <input>_len (the core's "
                    "loader writes it for a variable-length field); absent from the batch = every clip is N long"),
    sdk::key_string("output", "\"audio_emb\"", "batch tensor to write: (B, out_features)"),
    sdk::key_int("sample_rate", "16000", "sample rate of the input (Hz): sets the filterbank's frequencies", 1000, 768000),
    sdk::key_int("n_fft", "400", "FFT size in samples (25 ms at 16 kHz)", 16, 65536),
    sdk::key_int("win_length", "0", "Hann window length in samples, centred in the FFT; 0 = n_fft", 0, 65536),
    sdk::key_int("hop_length", "160", "samples between frames (10 ms at 16 kHz)", 1, 65536),
    sdk::key_int("n_mels", "64", "mel bands", 1, 4096),
    sdk::key_float("f_min", "0.0", "lowest filterbank frequency (Hz)", 0.0, 1e6),
    sdk::key_float("f_max", "0.0", "highest filterbank frequency (Hz); 0 = sample_rate / 2", 0.0, 1e6),
    sdk::key_float("log_eps", "1e-6", "log(mel power + log_eps)", 1e-12, 1.0),
    sdk::key_enum("normalize", "\"utterance\"",
                  "utterance: each clip's log-mel bands to zero mean and unit std over its frames (silence gives "
                  "zeros) | none",
                  "utterance|none"),
    sdk::key_int("conv_layers", "2", "Conv1d layers (kernel 3, stride 2, tanh GELU): each halves the frame rate", 1, 8),
    sdk::key_int("conv_channels", "128", "channels of every conv layer but the last, which has d_model", 1, 1 << 16),
    sdk::key_int("max_frames", "1024",
                 "longest clip in frames after the conv front end (rows of the learned position embedding)", 1, 1 << 24),
    sdk::key_int("out_features", "128", "size of the output embedding", 1, 1 << 20),
    TESSERA_TRANSFORMER_KEYS("128", "2", "4"),
};

at::Tensor uniform_param(at::IntArrayRef shape, int64_t fan_in) {  // torch.nn.Conv1d's default bound
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  return at::empty(shape).uniform_(-bound, bound).set_requires_grad(true);
}

// Frames after one conv of kernel 3, stride 2, padding 1 (0 stays 0).
at::Tensor conv_frames(const at::Tensor& frames) {
  return at::where(frames.gt(0), at::div(frames - 1, 2, "floor") + 1, frames);
}

// (B, T) bool: true for the first frames[b] positions of row b.
at::Tensor frame_mask(const at::Tensor& frames, int64_t t) {
  return at::arange(t, frames.options()).unsqueeze(0).lt(frames.unsqueeze(1));
}

au::LogMelOptions read_logmel(const sdk::Host& host) {
  au::LogMelOptions o;
  o.sample_rate = host.get_int("sample_rate");
  o.n_fft = host.get_int("n_fft");
  o.win_length = host.get_int("win_length");
  o.hop_length = host.get_int("hop_length");
  o.n_mels = host.get_int("n_mels");
  o.f_min = host.get_float("f_min");
  o.f_max = host.get_float("f_max");
  o.log_eps = host.get_float("log_eps");
  o.normalize = host.get_string("normalize") == "utterance";
  try {
    o.resolve();
  } catch (const std::invalid_argument& e) {
    throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, e.what());
  }
  return o;
}

class AudioEncoder : public sdk::Encoder {
 public:
  explicit AudioEncoder(const sdk::Host& host)
      : input_(host.get_string("input")), lengths_(host.get_string("lengths")), output_(host.get_string("output")),
        max_frames_(host.get_int("max_frames")), mel_(read_logmel(host)), cfg_(tf::StackConfig::read(host)) {
    if (lengths_.empty()) lengths_ = input_ + "_len";
    fbank_ = au::mel_filterbank(mel_);
    window_ = au::stft_window(mel_);
    const int64_t d = cfg_.d_model, layers = host.get_int("conv_layers"), ch = host.get_int("conv_channels");
    // In parameter order, so the init draws follow it.
    int64_t in = mel_.n_mels;
    for (int64_t i = 0; i < layers; ++i) {
      const int64_t out = i + 1 == layers ? d : ch;
      conv_.push_back({uniform_param({out, in, 3}, in * 3), uniform_param({out}, in * 3)});
      matmul_params_ += static_cast<double>(out * in * 3) / static_cast<double>(1 << (i + 1));  // per input frame
      in = out;
    }
    if (!cfg_.rotary) wpe_ = tf::normal_param({max_frames_, d}, cfg_.init_std);
    h_ = std::make_unique<tf::Stack>(cfg_);
    ln_f_ = tf::Norm(d, cfg_.norm, cfg_.norm_eps, cfg_.bias);
    head_ = tf::Linear(d, host.get_int("out_features"), cfg_.bias, cfg_.init_std);
    stride_ = int64_t{1} << layers;
    for (const auto& [name, p] : parameters())
      if (name.rfind("h.", 0) == 0 && p.dim() == 2) block_params_ += static_cast<double>(p.numel());
  }

  sdk::Params parameters() override {
    sdk::Params p;
    for (size_t i = 0; i < conv_.size(); ++i) {
      p.emplace_back("conv" + std::to_string(i) + ".weight", conv_[i].weight);
      p.emplace_back("conv" + std::to_string(i) + ".bias", conv_[i].bias);
    }
    if (wpe_.defined()) p.emplace_back("wpe.weight", wpe_);
    h_->append(p);
    ln_f_.append("ln_f.", p);
    head_.append("head.", p);
    return p;
  }
  void train(bool training) override { training_ = training; }

  // Forward + backward model FLOPs: 6 per conv weight per output frame and per block matmul
  // weight per frame after the front end, plus attention's 12 x n_layers x d_model x T per frame.
  double flops(const sdk::TensorSet& batch) override {
    const at::Tensor wave = batch.get(input_);
    const double frames = static_cast<double>(au::frame_count(wave.size(-1), mel_)), b = static_cast<double>(wave.size(0));
    const double t = std::ceil(frames / static_cast<double>(stride_));
    return b * (6.0 * matmul_params_ * frames + t * (6.0 * block_params_ + 12.0 * static_cast<double>(cfg_.n_layers * cfg_.d_model) * t));
  }

  void forward(sdk::TensorSet& batch) override {
    const at::Tensor wave = batch.get(input_);  // (B, N)
    if (wave.dim() != 2 || !at::isFloatingType(wave.scalar_type()))
      throw sdk::Error(TSR_ERR_TYPE, "'" + input_ + "' must be (B, N) float samples, got a " + std::to_string(wave.dim()) + "-d tensor");
    const int64_t n = wave.size(1);
    at::Tensor lengths;
    if (batch.has(lengths_)) {
      lengths = batch.get(lengths_).to(at::kLong);
      if (lengths.dim() != 1 || lengths.size(0) != wave.size(0))
        throw sdk::Error(TSR_ERR_TYPE, "'" + lengths_ + "' must be (B,) lengths with B = " + std::to_string(wave.size(0)));
      if (lengths.numel() && (lengths.min().item<int64_t>() < 0 || lengths.max().item<int64_t>() > n))
        throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "'" + lengths_ + "' holds a length outside [0, " + std::to_string(n) +
                                                       "], the samples of '" + input_ + "'");
    } else {
      lengths = at::full({wave.size(0)}, n, wave.options().dtype(at::kLong));
    }
    au::LogMel mel;
    {
      at::NoGradGuard no_grad;  // the samples are data; nothing upstream to differentiate
      mel = au::log_mel(wave, lengths, mel_, fbank_, window_);
    }
    const at::Tensor& w0 = conv_.front().weight;
    at::Tensor x = mel.features.to(w0.scalar_type()).transpose(1, 2).contiguous();  // (B, n_mels, T)
    at::Tensor frames = mel.frames;
    for (size_t i = 0; i < conv_.size(); ++i) {
      x = at::conv1d(x, conv_[i].weight, conv_[i].bias, 2, 1);
      frames = conv_frames(frames);
      // tanh GELU, as the blocks use: the exact GELU's backward called from this plugin gave gradients of
      // 1e10..inf on LibTorch 1.13 here, at random (the AudioEncoder gradient test repeats a backward).
      x = at::gelu(x, "tanh") * frame_mask(frames, x.size(2)).unsqueeze(1).to(x.scalar_type());  // padding frames stay 0
    }
    x = x.transpose(1, 2);  // (B, T', d)
    const int64_t t = x.size(1);
    if (wpe_.defined() && t > max_frames_)
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT,
                       "'" + input_ + "' holds clips of " + std::to_string(n) + " samples (" +
                           std::to_string(static_cast<double>(n) / static_cast<double>(mel_.sample_rate)) + " s at " +
                           std::to_string(mel_.sample_rate) + " Hz), " + std::to_string(t) +
                           " frames after the conv front end: more than max_frames = " + std::to_string(max_frames_) +
                           " (raise it, or cut the clips shorter in the dataset)");
    const at::Tensor real = frame_mask(frames, t);  // (B, T') bool
    if (wpe_.defined()) x = x + wpe_.narrow(0, 0, t);
    x = tf::train_dropout(x, cfg_.dropout, training_);
    if (cfg_.n_layers > 0) x = h_->forward(x, tf::AttentionMask{false, real}, training_);
    x = ln_f_(x);
    const at::Tensor m = real.unsqueeze(-1).to(x.scalar_type());  // (B, T', 1)
    const at::Tensor pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0);  // an empty clip pools to zeros
    batch.put(output_, head_(pooled));  // (B, out_features)
  }

 private:
  struct Conv {
    at::Tensor weight, bias;  // (out, in, 3), (out,)
  };
  std::string input_, lengths_, output_;
  int64_t max_frames_;
  au::LogMelOptions mel_;
  tf::StackConfig cfg_;
  at::Tensor fbank_, window_;  // (n_fft / 2 + 1, n_mels), (n_fft,) f32
  std::vector<Conv> conv_;
  at::Tensor wpe_;                // (max_frames, d); undefined for rotary positions
  std::unique_ptr<tf::Stack> h_;  // n_layers bidirectional blocks
  tf::Norm ln_f_;
  tf::Linear head_;
  bool training_ = true;
  int64_t stride_ = 1;
  double matmul_params_ = 0;  // conv weights per input frame (each layer's share of frames)
  double block_params_ = 0;   // matmul weights of the blocks
};

}  // namespace

TESSERA_PLUGIN(AudioEncoder, sdk::Encoder, "audio", "1.0.0",
               "Audio encoder over padded mono waveforms: log-mel spectrogram (at::stft, HTK mel filterbank, log, "
               "per-clip normalisation) -> conv_layers strided Conv1d + GELU -> n_layers pre-norm transformer blocks "
               "with the padding mask (0 = conv only) -> final norm -> masked mean over the clip's frames -> Linear "
               "to out_features. Padding never changes a clip's embedding.",
               kKeys)

// plugins/datasets/fashion_mnist/fashion_mnist.cpp — the `fashion_mnist` dataset plugin:
// Debian's Fashion-MNIST as normalised (1, 28, 28) images and labels, and with captions = true
// one WordNet caption of each image's class (byte ids) plus held-out class prompts for
// zero-shot evaluation.
#include <tessera/plugin.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "captions.hpp"
#include "idx.hpp"
#include "spoken.hpp"
#ifdef TESSERA_FASHION_AUDIO
#include "media/audio.hpp"
#endif

namespace sdk = tessera::sdk;
namespace fm = tessera::fashion_mnist;
#ifdef TESSERA_FASHION_AUDIO
namespace media = tessera::media;
#endif

namespace {

const tsr_config_key kKeys[] = {
    sdk::key_string("path", "\"/usr/share/datasets/fashion-mnist\"",
                    "directory of the IDX .gz files (Debian: dataset-fashion-mnist)"),
    sdk::key_float("normalize_mean", "0.2860", "pixels become (x / 255 - mean) / std", -1e9, 1e9),
    sdk::key_float("normalize_std", "0.3530", "pixels become (x / 255 - mean) / std", 1e-9, 1e9),
    sdk::key_bool("captions", "false", "add a WordNet caption of each image's class (byte ids) and class prompts"),
    sdk::key_string("wordnet_path", "\"/usr/share/wordnet\"", "WordNet database directory (Debian: wordnet-base)"),
    sdk::key_int("caption_len", "96", "caption length in bytes (longer ones are truncated)", 8, 4096),
    sdk::key_int("heldout_captions", "3", "captions per class kept out of training: the zero-shot prompts", 1, 16),
    sdk::key_string("caption_key", "\"caption_ids\"", "field of caption byte ids, (caption_len,) int64 per example"),
    sdk::key_string("spoken_captions", "\"\"",
                    "cache directory written by `tessera data speak` (a leading ~/ is $HOME): adds each image's "
                    "class caption spoken aloud, training voices in train, held-out voices in test, and held-out "
                    "voices' clips as zero-shot audio prompts; \"\" = no audio"),
    sdk::key_string("audio_key", "\"audio\"", "field of the spoken caption, (n,) float32 mono samples"),
    sdk::key_int("sample_rate", "16000", "spoken captions are resampled to this rate (Hz)", 1000, 192000),
    sdk::key_float("max_seconds", "4.0", "spoken captions are cut to this length (counted in the log)", 0.1, 600),
};

// One decoded spoken caption.
struct Clip {
  at::Tensor samples;  // (n,) f32 at sample_rate
  int64_t cls = 0;
};

// The spoken captions of the cache, decoded: training clips and held-out clips, by class.
struct SpokenSet {
  std::vector<std::vector<Clip>> train, heldout;  // [class] -> clips
};

std::string expand_home(const std::string& path) {
  if (path.rfind("~/", 0) != 0) return path;
  const char* home = std::getenv("HOME");
  if (!home || !*home) throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "spoken_captions = '" + path + "' but HOME is not set");
  return (std::filesystem::path(home) / path.substr(2)).string();
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

#ifdef TESSERA_FASHION_AUDIO
// Reads and checks the cache's manifest, decodes every clip (resampled, cut to max_seconds). A
// clip that does not decode or is silent is skipped; those, the truncated ones and the resampled
// ones at another rate than espeak-ng's are counted in one log line each.
SpokenSet load_spoken(const sdk::Host& host, const std::string& dir_key, const std::vector<fm::ClassCaptions>& classes) {
  const std::string dir = expand_home(dir_key);
  const std::string manifest_path = (std::filesystem::path(dir) / "manifest.tsv").string();
  const std::string text = read_bytes(manifest_path);
  if (text.empty())
    throw sdk::Error(TSR_ERR_NOT_FOUND, "spoken_captions: no manifest " + manifest_path +
                                            "; make the cache first: tessera data speak --out " + dir);
  std::vector<fm::SpokenClip> clips;
  try {
    clips = fm::parse_spoken_manifest(text, manifest_path);
    fm::check_spoken_manifest(clips, classes, manifest_path);
  } catch (const fm::Error& e) {
    throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, e.what());
  }
  media::AudioOptions opt;
  opt.sample_rate = host.get_int("sample_rate");
  opt.max_seconds = 0;  // cut below, to count
  const auto keep = static_cast<int64_t>(host.get_float("max_seconds") * static_cast<double>(opt.sample_rate));
  SpokenSet out;
  out.train.resize(classes.size());
  out.heldout.resize(classes.size());
  int64_t failed = 0, silent = 0, truncated = 0, other_rate = 0;
  std::string first_failure, first_silent;
  for (const fm::SpokenClip& c : clips) {
    const std::string path = (std::filesystem::path(dir) / c.file).string();
    at::Tensor samples;
    try {
      const std::string bytes = read_bytes(path);
      if (bytes.empty()) throw std::runtime_error(path + ": missing or empty");
      const media::Audio audio = media::decode_audio(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
      if (audio.rate != 22050) ++other_rate;  // espeak-ng writes 22050 Hz; another rate is resampled all the same
      samples = media::audio_tensor(audio, opt, path);
    } catch (const std::exception& e) {
      if (failed++ == 0) first_failure = e.what();
      continue;
    }
    if (samples.numel() == 0 || samples.abs().max().item<float>() < 1e-4f) {
      if (silent++ == 0) first_silent = path;
      continue;
    }
    if (samples.size(0) > keep) {
      samples = samples.slice(0, 0, keep).clone();
      ++truncated;
    }
    (c.heldout ? out.heldout : out.train)[static_cast<size_t>(c.cls)].push_back({samples, c.cls});
  }
  const int64_t used = static_cast<int64_t>(clips.size()) - failed - silent;
  std::ostringstream seconds;
  seconds << host.get_float("max_seconds");
  host.info("spoken captions " + dir + ": " + std::to_string(used) + " of " + std::to_string(clips.size()) +
            " clips, " + std::to_string(truncated) + " cut to max_seconds = " + seconds.str() + " s, " + std::to_string(other_rate) + " resampled from a rate other than 22050 Hz");
  if (failed) host.warn("spoken captions: " + std::to_string(failed) + " clips skipped, not decodable; the first: " + first_failure);
  if (silent) host.warn("spoken captions: " + std::to_string(silent) + " silent clips skipped; the first: " + first_silent);
  for (size_t c = 0; c < classes.size(); ++c)
    if (out.train[c].empty() || out.heldout[c].empty())
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "spoken captions " + dir + ": class " + std::to_string(c) +
                                                     " has no usable " + (out.train[c].empty() ? "training" : "held-out") +
                                                     " clip left; rebuild the cache with tessera data speak --out " + dir);
  return out;
}
#else
SpokenSet load_spoken(const sdk::Host&, const std::string&, const std::vector<fm::ClassCaptions>&) {
  throw sdk::Error(TSR_ERR_UNSUPPORTED, "spoken_captions: this fashion_mnist plugin was built without audio decoding "
                                        "(libsndfile1-dev and libsamplerate0-dev were missing)");
}
#endif

// (P, n_max) f32 zero-padded and (P,) int64 lengths of some clips.
std::pair<at::Tensor, at::Tensor> pad_clips(const std::vector<const Clip*>& clips) {
  int64_t n = 0;
  for (const Clip* c : clips) n = std::max(n, c->samples.size(0));
  at::Tensor out = at::zeros({static_cast<int64_t>(clips.size()), n}, at::kFloat);
  at::Tensor len = at::empty({static_cast<int64_t>(clips.size())}, at::kLong);
  for (size_t i = 0; i < clips.size(); ++i) {
    out[static_cast<int64_t>(i)].narrow(0, 0, clips[i]->samples.size(0)).copy_(clips[i]->samples);
    len[static_cast<int64_t>(i)] = clips[i]->samples.size(0);
  }
  return {out, len};
}

class FashionMnist final : public sdk::Dataset {
 public:
  explicit FashionMnist(const sdk::Host& host)
      : mean_(host.get_float("normalize_mean")), std_(host.get_float("normalize_std")) {
    const std::string path = host.get_string("path");
    train_ = fm::load_fashion_mnist(path, "train");
    test_ = fm::load_fashion_mnist(path, "test");
    const std::string spoken = host.get_string("spoken_captions");
    if (!host.get_bool("captions") && spoken.empty()) return;
    classes_ = fm::fashion_mnist_captions(host.get_string("wordnet_path"), host.get_int("heldout_captions"));
    if (!spoken.empty()) {
      audio_key_ = host.get_string("audio_key");
      if (audio_key_.empty() || audio_key_ == "image" || audio_key_ == "label")
        throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "audio_key must name a new field, got '" + audio_key_ + "'");
      spoken_ = load_spoken(host, spoken, classes_);
    }
    if (!host.get_bool("captions")) return;
    caption_key_ = host.get_string("caption_key");
    caption_len_ = host.get_int("caption_len");
    if (caption_key_.empty() || caption_key_ == "image" || caption_key_ == "label")
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "caption_key must name a new field, got '" + caption_key_ + "'");
    if (caption_key_ == audio_key_)
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "caption_key and audio_key are both '" + caption_key_ + "'");
    std::vector<std::string> all;
    for (const auto& c : classes_) {
      caption_first_.push_back(static_cast<int64_t>(all.size()));
      caption_count_.push_back(static_cast<int64_t>(c.train.size()));
      all.insert(all.end(), c.train.begin(), c.train.end());
    }
    caption_ids_ = fm::encode_caption_bytes(all, caption_len_);
  }

  std::vector<sdk::Split> splits() override {
    return {{"train", train_.images.size(0)}, {"test", test_.images.size(0)}};
  }

  std::vector<sdk::Field> fields() override {
    std::vector<sdk::Field> f{
        {"image", TSR_DTYPE_F32, {1, train_.images.size(1), train_.images.size(2)}, 0.0, "normalised pixels"},
        {"label", TSR_DTYPE_I64, {}, 0.0, "class in [0, 10)"},
    };
    if (!caption_key_.empty())
      f.push_back({caption_key_, TSR_DTYPE_I64, {caption_len_}, 0.0, "caption bytes + 1, 0 = padding"});
    if (!audio_key_.empty())
      f.push_back({audio_key_, TSR_DTYPE_F32, {-1}, 0.0, "the class caption spoken, mono samples"});
    return f;
  }

  void get(const sdk::Request& req, sdk::TensorSet& out) override {
    const fm::ImageDataset& d = split(req.split);
    const int64_t n = d.images.size(0);
    if (req.index < 0 || req.index >= n)
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "index " + std::to_string(req.index) + " outside [0, " +
                                                     std::to_string(n) + ") of split '" + req.split + "'");
    // The same element-wise float ops as normalising the whole set at once.
    at::Tensor image = d.images[req.index].to(at::kFloat).reshape({1, d.images.size(1), d.images.size(2)});
    image.div_(255.0).sub_(mean_).div_(std_);
    const int64_t label = d.labels[req.index].item<int64_t>();
    out.put("image", image);
    out.put("label", at::scalar_tensor(label, at::kLong));
    if (!caption_key_.empty()) {
      const auto c = static_cast<size_t>(label);
      const int64_t row = caption_first_[c] + fm::caption_choice(req.seed, req.epoch, req.index, caption_count_[c]);
      out.put(caption_key_, caption_ids_[row].clone());
    }
    if (!audio_key_.empty()) {
      // Training: any training voice and caption, drawn anew each epoch; test: a held-out voice
      // speaking a held-out caption, the same every epoch.
      const bool train = req.split == "train";
      const auto& clips = (train ? spoken_.train : spoken_.heldout)[static_cast<size_t>(label)];
      const int64_t pick = fm::caption_choice(req.seed ^ kAudioStream, train ? req.epoch : 0, req.index,
                                              static_cast<int64_t>(clips.size()));
      out.put(audio_key_, clips[static_cast<size_t>(pick)].samples);
    }
  }

  bool metadata(const std::string& name, sdk::TensorSet& out) override {
    if (name == "zero_shot_audio_prompts" && !audio_key_.empty()) {
      // Every held-out clip (held-out voices speaking held-out captions), class by class.
      std::vector<const Clip*> clips;
      std::vector<int64_t> owner;
      for (const auto& per_class : spoken_.heldout)
        for (const Clip& c : per_class) clips.push_back(&c), owner.push_back(c.cls);
      auto [samples, lengths] = pad_clips(clips);
      out.put(audio_key_, samples);
      out.put(audio_key_ + "_len", lengths);
      out.put("class", at::tensor(owner, at::kLong));
      return true;
    }
    if (name != "zero_shot_prompts" || caption_key_.empty()) return false;
    std::vector<int64_t> owner;
    for (size_t c = 0; c < classes_.size(); ++c)
      for (size_t i = 0; i < classes_[c].heldout.size(); ++i) owner.push_back(static_cast<int64_t>(c));
    out.put(caption_key_, fm::encode_caption_bytes(prompts(), caption_len_));
    out.put("class", at::tensor(owner, at::kLong));
    return true;
  }

  std::vector<std::string> metadata_text(const std::string& name) override {
    if (name == "class_names") return train_.class_names;
    if (name == "zero_shot_prompts") return prompts();
    return {};
  }

  at::Tensor encode_text(const std::string& field, const std::string& text) override {
    check_text_field(field);
    return fm::encode_caption_bytes({text}, caption_len_)[0];
  }
  std::string decode_text(const std::string& field, const at::Tensor& ids) override {
    check_text_field(field);
    return fm::decode_caption_bytes(ids.to(at::kLong));
  }

 private:
  const fm::ImageDataset& split(const std::string& name) const {
    if (name == "train") return train_;
    if (name == "test") return test_;
    throw sdk::Error(TSR_ERR_NOT_FOUND, "no split '" + name + "' (fashion_mnist has train and test)");
  }
  void check_text_field(const std::string& field) const {
    if (caption_key_.empty() || field != caption_key_)
      throw sdk::Error(TSR_ERR_NOT_FOUND, "no text field '" + field + "' (captions = true adds '" +
                                              (caption_key_.empty() ? std::string("caption_ids") : caption_key_) + "')");
  }
  // Every class's held-out captions, class by class.
  std::vector<std::string> prompts() const {
    std::vector<std::string> out;
    for (const auto& c : classes_) out.insert(out.end(), c.heldout.begin(), c.heldout.end());
    return out;
  }

  double mean_, std_;
  fm::ImageDataset train_, test_;
  static constexpr uint64_t kAudioStream = 0x73706F6B656E0000ull;  // "spoken": apart from the captions' draws
  std::string caption_key_;  // empty: no captions
  std::string audio_key_;    // empty: no spoken captions
  SpokenSet spoken_;
  int64_t caption_len_ = 0;
  std::vector<fm::ClassCaptions> classes_;
  at::Tensor caption_ids_;              // (train captions of all classes, caption_len) int64, class by class
  std::vector<int64_t> caption_first_;  // per class: its first row of caption_ids_
  std::vector<int64_t> caption_count_;  // per class: its number of rows
};

}  // namespace

TESSERA_PLUGIN(FashionMnist, sdk::Dataset, "fashion_mnist", "1.0.0",
               "Fashion-MNIST (Debian's dataset-fashion-mnist): (1, 28, 28) float32 images normalised with "
               "(x / 255 - mean) / std, int64 labels; with captions = true a WordNet caption of each image's class as "
               "byte ids, and held-out class prompts for zero-shot evaluation. Splits: train (60000), test (10000).",
               kKeys)

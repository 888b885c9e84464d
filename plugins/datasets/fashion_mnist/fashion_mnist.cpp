// plugins/datasets/fashion_mnist/fashion_mnist.cpp — the `fashion_mnist` dataset plugin:
// Debian's Fashion-MNIST as normalised (1, 28, 28) images and labels, and with captions = true
// one WordNet caption of each image's class (byte ids) plus held-out class prompts for
// zero-shot evaluation.
#include <tessera/plugin.hpp>

#include "captions.hpp"
#include "idx.hpp"

namespace sdk = tessera::sdk;
namespace fm = tessera::fashion_mnist;

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
};

class FashionMnist final : public sdk::Dataset {
 public:
  explicit FashionMnist(const sdk::Host& host)
      : mean_(host.get_float("normalize_mean")), std_(host.get_float("normalize_std")) {
    const std::string path = host.get_string("path");
    train_ = fm::load_fashion_mnist(path, "train");
    test_ = fm::load_fashion_mnist(path, "test");
    if (!host.get_bool("captions")) return;
    caption_key_ = host.get_string("caption_key");
    caption_len_ = host.get_int("caption_len");
    if (caption_key_.empty() || caption_key_ == "image" || caption_key_ == "label")
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "caption_key must name a new field, got '" + caption_key_ + "'");
    classes_ = fm::fashion_mnist_captions(host.get_string("wordnet_path"), host.get_int("heldout_captions"));
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
  }

  bool metadata(const std::string& name, sdk::TensorSet& out) override {
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
  std::string caption_key_;  // empty: no captions
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

// tests/unit/test_multimodal_plugins.cpp — the "clip" loss reducer and the "text" encoder, loaded
// from the build's plugin directory: values and gradients against plain LibTorch, padding, shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/functional/normalization.h>

#include "tessera/core/backward.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "tessera/core/trainer.hpp"  // encoder_slot_schema, loss_slot_schema
#include "captions.hpp"  // the fashion_mnist dataset's byte encoding of captions
#include "support.hpp"

using namespace tessera;

namespace {

// Byte ids as the fashion_mnist dataset writes them: byte + 1, 0 = padding, truncated at len.
using tessera::fashion_mnist::encode_caption_bytes;


// Resolves the first [[encoder]] / [[loss]] table of `toml` against the slot + plugin schema.
Section resolve(const Config& cfg, const std::string& slot, const std::shared_ptr<PluginLibrary>& lib) {
  Schema schema = slot == "encoder" ? encoder_slot_schema() : loss_slot_schema();
  for (const auto& k : lib->schema().keys) schema.keys.push_back(k);
  return cfg.resolve(*cfg.tables(slot)[0], schema, "[[" + slot + "]] #1");
}

std::unique_ptr<LossInstance> make_clip(const std::string& keys) {
  Config cfg = Config::parse("[[loss]]\nplugin = \"clip\"\n" + keys, "clip.toml");
  auto lib = tessera::test::plugin_registry().get("clip", TSR_KIND_LOSS, "test");
  return std::make_unique<LossInstance>(lib, resolve(cfg, "loss", lib), "clip");
}

std::unique_ptr<EncoderInstance> make_text(const std::string& keys) {
  Config cfg = Config::parse("[[encoder]]\nplugin = \"text\"\n" + keys, "text.toml");
  auto lib = tessera::test::plugin_registry().get("text", TSR_KIND_ENCODER, "test");
  return std::make_unique<EncoderInstance>(lib, resolve(cfg, "encoder", lib), "text");
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// The reference: CLIP's loss written directly in LibTorch (torch.nn.functional semantics).
struct Reference {
  at::Tensor loss, img_grad, txt_grad, scale_grad;
};
Reference clip_reference(const at::Tensor& img0, const at::Tensor& txt0, double scale0, const at::Tensor& labels,
                         double weight) {
  namespace F = torch::nn::functional;
  at::Tensor img = img0.detach().clone().set_requires_grad(true);
  at::Tensor txt = txt0.detach().clone().set_requires_grad(true);
  at::Tensor s = at::full({}, scale0).set_requires_grad(true);
  at::Tensor i = F::normalize(img, F::NormalizeFuncOptions().dim(1));
  at::Tensor t = F::normalize(txt, F::NormalizeFuncOptions().dim(1));
  at::Tensor logits = s.clamp_max(std::log(100.0)).exp() * i.matmul(t.t());
  at::Tensor loss;
  if (!labels.defined()) {
    at::Tensor diag = at::arange(img.size(0), at::kLong);
    loss = (at::cross_entropy_loss(logits, diag) + at::cross_entropy_loss(logits.t(), diag)) / 2;
  } else {
    at::Tensor same = labels.unsqueeze(1).eq(labels.unsqueeze(0)).to(at::kFloat);
    at::Tensor probs = same / same.sum(1, true);  // soft targets; cross_entropy accepts probabilities
    loss = (at::cross_entropy_loss(logits, probs) + at::cross_entropy_loss(logits.t(), probs.t())) / 2;
  }
  torch::autograd::backward({loss * weight});
  return {loss.detach(), img.grad(), txt.grad(), s.grad()};
}

void check_clip_against_reference(const std::string& keys, double scale0, bool with_labels) {
  auto clip = make_clip(keys);
  auto params = clip->parameters();
  ASSERT_EQ(params.size(), 1u);
  EXPECT_EQ(params[0].first, "logit_scale");
  at::Tensor scale = params[0].second;
  EXPECT_EQ(scale.dim(), 0);
  EXPECT_TRUE(scale.requires_grad());
  EXPECT_DOUBLE_EQ(scale.item<double>(), static_cast<double>(static_cast<float>(scale0)));

  at::manual_seed(11);
  const int64_t b = 12, d = 7;
  at::Tensor img = at::randn({b, d}).set_requires_grad(true);
  at::Tensor txt = at::randn({b, d}).set_requires_grad(true);
  at::Tensor labels = at::tensor({0, 1, 2, 0, 1, 3, 3, 0, 4, 2, 1, 0}, at::kLong);
  TensorMap batch{{"image_emb", img}, {"text_emb", txt}, {"label", labels}};
  std::vector<Term> terms;
  clip->compute(batch, terms);
  ASSERT_EQ(terms.size(), 1u);
  EXPECT_EQ(terms[0].name, "clip");
  EXPECT_EQ(terms[0].value.dim(), 0);
  BackwardOptions bo;
  bo.divisor = 2;  // as with two accumulation micro-batches
  BackwardDispatcher().backward(terms, bo);

  Reference ref = clip_reference(img, txt, static_cast<float>(scale0), with_labels ? labels : at::Tensor(), 0.5);
  // The diagonal variant matches bit for bit; with soft targets the summation order of the loss
  // value may differ from cross_entropy's by an ulp or two (the gradients still match exactly).
  EXPECT_LE(std::abs(terms[0].value.item<double>() - ref.loss.item<double>()), 1e-6 * std::abs(ref.loss.item<double>()))
      << terms[0].value.item<double>() << " vs " << ref.loss.item<double>();
  EXPECT_LE(max_abs_diff(img.grad(), ref.img_grad), 1e-6);
  EXPECT_LE(max_abs_diff(txt.grad(), ref.txt_grad), 1e-6);
  ASSERT_TRUE(scale.grad().defined());
  EXPECT_LE(std::abs(scale.grad().item<double>() - ref.scale_grad.item<double>()), 1e-6)
      << scale.grad().item<double>() << " vs " << ref.scale_grad.item<double>();
}

}  // namespace

TEST(MultimodalClip, DescribesItselfAsALoss) {
  auto lib = tessera::test::plugin_registry().get("clip", TSR_KIND_LOSS, "test");
  std::vector<std::string> keys;
  for (const auto& k : lib->schema().keys) keys.push_back(k.name);
  for (const char* k : {"image", "text", "label", "logit_scale_init", "max_logit_scale", "learn_logit_scale", "term"})
    EXPECT_NE(std::find(keys.begin(), keys.end(), k), keys.end()) << k;
}

TEST(MultimodalClip, DiagonalTargetsMatchPlainLibTorch) {
  check_clip_against_reference("label = \"\"\n", std::log(1 / 0.07), false);
}

TEST(MultimodalClip, SameLabelPositivesMatchPlainLibTorch) {
  check_clip_against_reference("", std::log(1 / 0.07), true);
  check_clip_against_reference("logit_scale_init = 1.25\n", 1.25, true);
}

TEST(MultimodalClip, LogitScaleIsClampedToLog100) {
  // Above the clamp the scale is exp(log 100) = 100 and receives no gradient.
  check_clip_against_reference("logit_scale_init = 5.5\n", 5.5, true);
  auto clip = make_clip("logit_scale_init = 5.5\n");
  at::Tensor img = at::randn({4, 3}), txt = at::randn({4, 3});
  TensorMap batch{{"image_emb", img}, {"text_emb", txt}, {"label", at::arange(4, at::kLong)}};
  std::vector<Term> terms;
  clip->compute(batch, terms);
  BackwardDispatcher().backward(terms, BackwardOptions{});
  EXPECT_EQ(clip->parameters()[0].second.grad().item<float>(), 0.0f);
}

TEST(MultimodalClip, FixedTemperatureHasNoParametersAndBadShapesAreErrors) {
  auto fixed = make_clip("learn_logit_scale = false\nterm = \"contrastive\"\nimage = \"a\"\ntext = \"b\"\n");
  EXPECT_TRUE(fixed->parameters().empty());
  at::Tensor a = at::randn({5, 4}).set_requires_grad(true);
  TensorMap batch{{"a", a}, {"b", at::randn({5, 4})}, {"label", at::zeros({5}, at::kLong)}};
  std::vector<Term> terms;
  fixed->compute(batch, terms);
  ASSERT_EQ(terms.size(), 1u);
  EXPECT_EQ(terms[0].name, "contrastive");
  // All labels equal: the targets are uniform over each row, which no logits can beat by much.
  EXPECT_TRUE(std::isfinite(terms[0].value.item<double>()));
  EXPECT_TRUE(terms[0].value.requires_grad());

  TensorMap bad{{"a", at::randn({5, 4})}, {"b", at::randn({6, 4})}, {"label", at::zeros({5}, at::kLong)}};
  EXPECT_THROW(fixed->compute(bad, terms), PluginError);
  TensorMap missing{{"a", at::randn({5, 4})}};
  EXPECT_THROW(fixed->compute(missing, terms), PluginError);
}

// ---- the text encoder -----------------------------------------------------------------------------

TEST(MultimodalText, OutputShapeAndParameters) {
  at::manual_seed(1);
  auto text = make_text("out_features = 24\nembed_dim = 8\nchannels = 16\nword_dim = 12\nword_buckets = 64\n");
  auto params = text->parameters();
  std::vector<std::string> names;
  for (auto& [n, t] : params) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"byte_embedding.weight", "conv0.weight", "conv0.bias", "conv1.weight",
                                             "conv1.bias", "word_embedding.weight", "fc0.weight", "fc0.bias",
                                             "fc1.weight", "fc1.bias"}));
  EXPECT_EQ(params[0].second.sizes(), at::IntArrayRef({257, 8}));
  EXPECT_TRUE(at::equal(params[0].second[0], at::zeros({8})));  // the padding row
  EXPECT_EQ(params[1].second.sizes(), at::IntArrayRef({16, 8, 5}));
  EXPECT_EQ(params[5].second.sizes(), at::IntArrayRef({64, 12}));
  EXPECT_EQ(params[6].second.sizes(), at::IntArrayRef({256, 2 * 16 + 12}));

  TensorMap batch{{"caption_ids", encode_caption_bytes({"a photo of a sandal", "a coat", ""}, 32)}};
  text->forward(batch);
  const at::Tensor& out = batch.at("text_emb");
  EXPECT_EQ(out.sizes(), at::IntArrayRef({3, 24}));
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(out).all().item<bool>());
  EXPECT_FALSE(at::allclose(out[0], out[1]));

  // Every parameter receives a gradient; the padding row's stays zero.
  out.sum().backward();
  for (auto& [n, t] : params) EXPECT_TRUE(t.grad().defined()) << n;
  EXPECT_TRUE(at::equal(params[0].second.grad()[0], at::zeros({8})));
}

TEST(MultimodalText, PaddingDoesNotChangeTheEmbedding) {
  at::manual_seed(2);
  const std::vector<std::string> captions = {"a photo of a sandal", "ankle boot: footwear that covers the whole foot",
                                             "a T-shirt, a close-fitting pullover shirt", "x", ""};
  for (const char* keys : {"kernel_size = 3\nconv_layers = 3\ndropout = 0.5\n", "conv_layers = 0\n"}) {
    auto text = make_text(keys);
    text->set_training(false);
    TensorMap short_batch{{"caption_ids", encode_caption_bytes(captions, 50)}};
    TensorMap long_batch{{"caption_ids", encode_caption_bytes(captions, 130)}};
    TensorMap one{{"caption_ids", encode_caption_bytes({captions[1]}, 47)}};  // exactly its length: no padding
    text->forward(short_batch);
    text->forward(long_batch);
    text->forward(one);
    const at::Tensor& a = short_batch.at("text_emb");
    const at::Tensor& b = long_batch.at("text_emb");
    EXPECT_TRUE(at::isfinite(a).all().item<bool>()) << keys;
    EXPECT_LE(max_abs_diff(a, b), 1e-5) << keys;
    EXPECT_LE(max_abs_diff(a[1], one.at("text_emb")[0]), 1e-5) << keys;  // nor do the other captions of the batch
  }
}

TEST(MultimodalText, VariantsAndBadConfig) {
  at::manual_seed(3);
  // Bytes only (no word features), and words only (no convolutions).
  for (const char* keys : {"word_buckets = 0\n", "conv_layers = 0\nhidden_features = 0\n"}) {
    auto text = make_text(std::string(keys) + "out_features = 6\n");
    TensorMap batch{{"caption_ids", encode_caption_bytes({"a bag", "a dress"}, 16)}};
    text->forward(batch);
    EXPECT_EQ(batch.at("text_emb").sizes(), at::IntArrayRef({2, 6})) << keys;
  }
  EXPECT_THROW(make_text("kernel_size = 4\n"), PluginError);
  auto text = make_text("");
  TensorMap wrong{{"caption_ids", at::zeros({2, 3, 4}, at::kLong)}};
  EXPECT_THROW(text->forward(wrong), PluginError);
}

// cross_entropy on sequences: (B, T, V) logits against (B, T) targets equal LibTorch's loss over
// the flattened positions (mean, or the sum with normalize = "tokens", ignore_index excluded and
// counted out of the units); logits and targets that do not fit are refused by name.
TEST(CrossEntropyPlugin, SequencesMeanSumUnitsAndShapeErrors) {
  auto make = [](const std::string& keys) {
    Config cfg = Config::parse("[[loss]]\nplugin = \"cross_entropy\"\nlogits = \"logits\"\ntarget = \"labels\"\n" + keys,
                               "ce.toml");
    auto lib = tessera::test::plugin_registry().get("cross_entropy", TSR_KIND_LOSS, "test");
    return std::make_unique<LossInstance>(lib, resolve(cfg, "loss", lib), "cross_entropy");
  };
  at::manual_seed(3);
  const at::Tensor logits = at::randn({2, 5, 7}).requires_grad_(true);                    // (B, T, V)
  const at::Tensor labels = at::randint(0, 7, {2, 5}, at::kLong).index_put_({1, at::indexing::Slice(3)}, -100);
  const TensorMap batch{{"logits", logits}, {"labels", labels}};
  const at::Tensor ref_sum =
      at::cross_entropy_loss(logits.reshape({10, 7}), labels.reshape({10}), {}, at::Reduction::Sum, -100);

  std::vector<Term> mean_terms;
  auto mean = make("");
  mean->compute(batch, mean_terms);
  ASSERT_EQ(mean_terms.size(), 1u);
  EXPECT_FALSE(mean_terms[0].per_unit);
  EXPECT_NEAR(mean_terms[0].value.item<double>(), ref_sum.item<double>() / 8.0, 1e-6);  // 8 targets are not ignored
  EXPECT_EQ(mean->count_units(batch), std::optional<int64_t>(-1));  // a mean loss has no units

  std::vector<Term> sum_terms;
  auto tokens = make("normalize = \"tokens\"\n");
  tokens->compute(batch, sum_terms);
  ASSERT_EQ(sum_terms.size(), 1u);
  EXPECT_TRUE(sum_terms[0].per_unit);
  EXPECT_NEAR(sum_terms[0].value.item<double>(), ref_sum.item<double>(), 1e-5);
  EXPECT_EQ(tokens->count_units(batch), std::optional<int64_t>(8));

  auto refused = [&](const TensorMap& bad, const std::string& expected) {
    std::vector<Term> t;
    try {
      tokens->compute(bad, t);
      ADD_FAILURE() << "accepted; expected: " << expected;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  refused({{"logits", at::randn({2, 5, 7, 1})}, {"labels", labels}}, "'logits' must be (B, C) or (B, T, C), got 4 dims");
  refused({{"logits", logits}, {"labels", at::zeros({2, 4}, at::kLong)}},
          "'labels' has shape [2, 4], the logits 'logits' [2, 5, 7]: expected the logits' shape without its last dim");
}

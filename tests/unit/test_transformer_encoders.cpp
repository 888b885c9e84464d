// tests/unit/test_transformer_encoders.cpp — the gpt, vit and text_transformer encoder plugins,
// loaded from the build's plugin directory: gpt against a plain LibTorch GPT on the same weights,
// checkpointed training equal to plain training through the whole engine, vit gradients against
// finite differences, text_transformer's independence of padding.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/csrc/autograd/autograd.h>

#include "support.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "tessera/core/safetensors.hpp"
#include "tessera/core/trainer.hpp"
#include "captions.hpp"  // the fashion_mnist dataset's byte encoding of captions
#include "paths.hpp"

namespace fs = std::filesystem;
using namespace tessera;

namespace {


std::unique_ptr<EncoderInstance> make_encoder(const std::string& plugin, const std::string& keys) {
  Config cfg = Config::parse("[[encoder]]\nplugin = \"" + plugin + "\"\n" + keys, plugin + ".toml");
  auto lib = tessera::test::plugin_registry().get(plugin, TSR_KIND_ENCODER, "test");
  Schema schema = encoder_slot_schema();
  for (const auto& k : lib->schema().keys) schema.keys.push_back(k);
  return std::make_unique<EncoderInstance>(lib, cfg.resolve(*cfg.tables("encoder")[0], schema, "[[encoder]] #1"),
                                           plugin);
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor af = a.to(at::kDouble), bf = b.to(at::kDouble);
  return ((af - bf).abs().max() / bf.abs().max().clamp_min(1e-30)).item<double>();
}

// ---- a GPT written from the spec with plain LibTorch ops, on named weights ----------------------
struct RefGpt {
  std::map<std::string, at::Tensor> w;  // leaves, copies of the plugin's parameters
  int64_t n_layers, n_heads;
  bool rmsnorm, swiglu, rotary;
  double eps = 1e-5, theta = 10000.0;

  at::Tensor get(const std::string& name) const {
    auto it = w.find(name);
    return it == w.end() ? at::Tensor() : it->second;
  }
  at::Tensor norm(const at::Tensor& x, const std::string& p) const {
    if (rmsnorm) return x / (x.square().mean(-1, true) + eps).sqrt() * get(p + "weight");
    const at::Tensor mu = x.mean(-1, true), var = (x - mu).square().mean(-1, true);
    at::Tensor y = (x - mu) / (var + eps).sqrt() * get(p + "weight");
    return get(p + "bias").defined() ? y + get(p + "bias") : y;
  }
  at::Tensor linear(const at::Tensor& x, const std::string& p) const {
    at::Tensor y = x.matmul(get(p + "weight").t());
    return get(p + "bias").defined() ? y + get(p + "bias") : y;
  }
  // Pairs (j, j + d_head/2) rotated by pos * theta^(-2j/d_head); x: (B, H, T, d_head).
  at::Tensor rope(const at::Tensor& x) const {
    const int64_t t = x.size(2), half = x.size(3) / 2;
    const at::Tensor j = at::arange(half, at::kDouble);
    const at::Tensor angle = at::arange(t, at::kDouble).unsqueeze(1) * at::pow(theta, -2.0 * j / (2 * half));
    const at::Tensor c = angle.cos().to(x.scalar_type()), s = angle.sin().to(x.scalar_type());  // (T, half)
    const at::Tensor a = x.narrow(-1, 0, half), b = x.narrow(-1, half, half);
    return at::cat({a * c - b * s, b * c + a * s}, -1);
  }
  at::Tensor forward(const at::Tensor& ids) const {
    const int64_t t = ids.size(1);
    at::Tensor x = get("wte.weight").index_select(0, ids.flatten()).view({ids.size(0), t, -1});
    if (!rotary) x = x + get("wpe.weight").narrow(0, 0, t);
    const int64_t d = x.size(2), hd = d / n_heads;
    const at::Tensor future = at::ones({t, t}, at::kBool).triu(1);
    for (int64_t i = 0; i < n_layers; ++i) {
      const std::string p = "h." + std::to_string(i) + ".";
      const at::Tensor qkv = linear(norm(x, p + "ln_1."), p + "attn.c_attn.");
      auto heads = [&](int64_t part) {
        return qkv.narrow(-1, part * d, d).reshape({x.size(0), t, n_heads, hd}).transpose(1, 2);
      };
      at::Tensor q = heads(0), k = heads(1), v = heads(2);
      if (rotary) {
        q = rope(q);
        k = rope(k);
      }
      const at::Tensor att = (q.matmul(k.transpose(-2, -1)) / std::sqrt(static_cast<double>(hd)))
                                 .masked_fill(future, -INFINITY).softmax(-1);
      const at::Tensor y = att.matmul(v).transpose(1, 2).reshape({x.size(0), t, d});
      x = x + linear(y, p + "attn.c_proj.");
      const at::Tensor h = linear(norm(x, p + "ln_2."), p + "mlp.c_fc.");
      at::Tensor act;
      if (swiglu) {
        const int64_t f = h.size(-1) / 2;
        const at::Tensor gate = h.narrow(-1, 0, f), up = h.narrow(-1, f, f);
        act = gate * gate.sigmoid() * up;
      } else {
        act = 0.5 * h * (1 + (std::sqrt(2.0 / M_PI) * (h + 0.044715 * h.pow(3))).tanh());
      }
      x = x + linear(act, p + "mlp.c_proj.");
    }
    const at::Tensor head = get("lm_head.weight").defined() ? get("lm_head.weight") : get("wte.weight");
    return norm(x, "ln_f.").matmul(head.t());
  }
};

void check_gpt_against_reference(const std::string& keys, bool rmsnorm, bool swiglu, bool rotary,
                                 const std::vector<std::string>& expected_names) {
  at::manual_seed(4);
  auto gpt = make_encoder("gpt", "vocab_size = 50\nmax_seq_len = 12\nd_model = 32\nn_layers = 2\nn_heads = 4\n" + keys);
  auto params = gpt->parameters();
  std::vector<std::string> names;
  for (auto& [n, t] : params) names.push_back(n);
  ASSERT_EQ(std::vector<std::string>(names.begin(), names.begin() + expected_names.size()), expected_names) << keys;

  RefGpt ref{{}, 2, 4, rmsnorm, swiglu, rotary};
  for (auto& [n, t] : params) ref.w[n] = t.detach().clone().requires_grad_(true);
  const at::Tensor ids = at::randint(0, 50, {3, 11}, at::kLong);
  TensorMap batch{{"input_ids", ids}};
  gpt->forward(batch);
  const at::Tensor logits = batch.at("logits");
  ASSERT_EQ(logits.sizes(), at::IntArrayRef({3, 11, 50}));
  const at::Tensor ref_logits = ref.forward(ids);
  EXPECT_LE(max_rel_diff(logits, ref_logits), 1e-5) << keys;

  const at::Tensor g = at::randn(logits.sizes());
  logits.backward(g);
  ref_logits.backward(g);
  for (auto& [n, t] : params) {
    ASSERT_TRUE(t.grad().defined()) << keys << n;
    EXPECT_LE(max_rel_diff(t.grad(), ref.w.at(n).grad()), 1e-5) << keys << n;
  }
}

// ---- training through the engine: token shards, gpt, a token cross-entropy -------------------
bool have_plugin(const std::string& name) { return fs::exists(TESSERA_PLUGIN_DIR + "/" + name + ".so"); }

// A nanoGPT shard (headerless uint16) of a learnable stream: a walk with a few fixed steps.
std::string write_tokens(const fs::path& dir, int64_t n, int64_t vocab) {
  std::vector<uint16_t> tokens(static_cast<size_t>(n));
  int64_t t = 0;
  for (int64_t i = 0; i < n; ++i) {
    tokens[static_cast<size_t>(i)] = static_cast<uint16_t>(t);
    t = (t + 1 + (i % 3 == 0 ? 5 : 0) + (i % 7 == 0 ? 2 : 0)) % vocab;
  }
  const fs::path p = dir / "train.bin";
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 2));
  return p.string();
}

struct RunResult {
  std::vector<nlohmann::json> records;
  std::vector<std::pair<std::string, at::Tensor>> weights;
};

RunResult train_gpt(const fs::path& out, const std::string& tokens, bool checkpoint, const std::string& precision) {
  const std::string toml =
      "[experiment]\nname = \"ckpt\"\nseed = 5\nthreads = 2\noutput_dir = \"" + out.string() +
      "\"\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\", \"" + TESSERA_TEST_PLUGIN_DIR + "\"]\n"
      "[data]\ndataset = \"token_shards\"\ntrain = \"" + tokens + "\"\nformat = \"nanogpt\"\nseq_len = 16\n"
      "vocab_size = 64\nbatch_size = 8\neval_split = \"train\"\n"
      "[[encoder]]\nplugin = \"gpt\"\nvocab_size = 64\nmax_seq_len = 16\nd_model = 32\nn_layers = 3\nn_heads = 4\n"
      "dropout = 0.1\ncheckpoint_activations = " + (checkpoint ? "true" : "false") + "\n"
      "[[loss]]\nplugin = \"cross_entropy\"\nlogits = \"logits\"\ntarget = \"labels\"\nnormalize = \"tokens\"\n"
      "[precision]\nplugin = \"" + precision + "\"\n"
      "[optimizer]\nlr = 0.01\n[train]\nmax_steps = 12\ngrad_accum = 2\nlog_every = 1\nclip_grad_norm = 1.0\n"
      "[eval]\nenabled = false\n";
  Config cfg = Config::parse(toml, "ckpt.toml");
  Experiment exp(cfg);
  exp.train();
  RunResult r{test::read_jsonl(out / "metrics.jsonl"), load_safetensors((out / "model.safetensors").string()).tensors};
  for (auto& rec : r.records) test::erase_timing(rec);  // wall-clock figures may differ
  return r;
}

// ---- captions as the fashion_mnist dataset writes them: byte + 1, 0 = padding -------------------
using tessera::fashion_mnist::encode_caption_bytes;

}  // namespace

// ---- gpt ------------------------------------------------------------------------------------------

TEST(GptPlugin, MatchesPlainLibTorchGptOnTheSameWeights) {
  check_gpt_against_reference("", false, false, false,
                              {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.attn.c_attn.weight",
                               "h.0.attn.c_attn.bias", "h.0.attn.c_proj.weight", "h.0.attn.c_proj.bias",
                               "h.0.ln_2.weight", "h.0.ln_2.bias", "h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias",
                               "h.0.mlp.c_proj.weight", "h.0.mlp.c_proj.bias", "h.1.ln_1.weight"});
  for (const char* attention : {"\"explicit\"", "\"auto\""})
    check_gpt_against_reference(std::string("attention = ") + attention + "\n", false, false, false, {"wte.weight"});
}

TEST(GptPlugin, RmsNormSwiGluRotaryUntiedWithoutBiasesMatchTheReference) {
  check_gpt_against_reference(
      "norm = \"rmsnorm\"\nmlp = \"swiglu\"\npositions = \"rotary\"\nbias = false\ntie_embeddings = false\n", true,
      true, true,
      {"wte.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight", "h.0.ln_2.weight",
       "h.0.mlp.c_fc.weight", "h.0.mlp.c_proj.weight", "h.1.ln_1.weight"});
  auto gpt = make_encoder("gpt", "vocab_size = 50\nd_model = 32\nn_layers = 2\nn_heads = 4\nnorm = \"rmsnorm\"\n"
                                 "mlp = \"swiglu\"\nbias = false\ntie_embeddings = false\n");
  auto params = gpt->parameters();
  EXPECT_EQ(params.back().first, "lm_head.weight");
  EXPECT_EQ(params[params.size() - 2].first, "ln_f.weight");
  for (auto& [n, t] : params)
    if (n == "h.0.mlp.c_fc.weight") EXPECT_EQ(t.sizes(), at::IntArrayRef({2 * 128, 32}));  // 8/3 * 32 -> 128
}

TEST(GptPlugin, InitAndBadInputs) {
  at::manual_seed(3);
  auto gpt = make_encoder("gpt", "vocab_size = 4000\nmax_seq_len = 64\nd_model = 128\nn_layers = 8\nn_heads = 4\n");
  for (auto& [n, t] : gpt->parameters()) {
    const double sd = t.std().item<double>();
    if (n == "wte.weight" || n == "wpe.weight" || n.find("c_attn.weight") != std::string::npos ||
        n.find("c_fc.weight") != std::string::npos)
      EXPECT_NEAR(sd, 0.02, 0.002) << n;
    else if (n.find("c_proj.weight") != std::string::npos)
      EXPECT_NEAR(sd, 0.02 / std::sqrt(16.0), 0.0005) << n;
    else if (n.find("ln_") != std::string::npos && n.find("weight") != std::string::npos)
      EXPECT_TRUE(at::equal(t, at::ones_like(t))) << n;
    else
      EXPECT_TRUE(at::equal(t, at::zeros_like(t))) << n;
  }
  TensorMap too_long{{"input_ids", at::zeros({1, 65}, at::kLong)}};
  EXPECT_THROW(gpt->forward(too_long), PluginError);
  TensorMap floats{{"input_ids", at::zeros({1, 4})}};
  EXPECT_THROW(gpt->forward(floats), PluginError);
  EXPECT_THROW(make_encoder("gpt", "d_model = 30\nn_heads = 4\n"), PluginError);
}

// Checkpointed and plain training through the whole engine (flat buffers, the gradient hooks, the
// updater, dropout, accumulation) end bit for bit alike, in fp32 and under bf16 autocast.
TEST(GptPlugin, CheckpointedTrainingEqualsPlainTrainingBitForBit) {
  if (!have_plugin("token_shards")) GTEST_SKIP() << "no token_shards plugin (SentencePiece missing)";
  const fs::path dir = test::temp_dir("gpt", "ckpt");
  const std::string tokens = write_tokens(dir, 4000, 64);
  for (const char* precision : {"fp32", "bf16"}) {
    RunResult plain = train_gpt(dir / (std::string("plain_") + precision), tokens, false, precision);
    RunResult ckpt = train_gpt(dir / (std::string("ckpt_") + precision), tokens, true, precision);
    ASSERT_EQ(plain.records.size(), 12u) << precision;
    ASSERT_EQ(plain.records.size(), ckpt.records.size()) << precision;
    for (size_t i = 0; i < plain.records.size(); ++i) EXPECT_EQ(plain.records[i], ckpt.records[i]) << precision << " step " << i;
    EXPECT_LT(plain.records.back()["loss"].get<double>(), plain.records.front()["loss"].get<double>()) << precision;
    ASSERT_EQ(plain.weights.size(), ckpt.weights.size());
    for (size_t i = 0; i < plain.weights.size(); ++i)
      EXPECT_TRUE(at::equal(plain.weights[i].second, ckpt.weights[i].second)) << precision << " " << plain.weights[i].first;
  }
}

// ---- vit ------------------------------------------------------------------------------------------

TEST(VitPlugin, ShapesParametersAndPooling) {
  at::manual_seed(5);
  for (const char* keys : {"patch_size = 7\npool = \"cls\"\n", "patch_size = 4\npool = \"mean\"\nnorm = \"rmsnorm\"\n"}) {
    auto vit = make_encoder("vit", std::string("d_model = 32\nn_layers = 2\nn_heads = 4\nout_features = 10\n") + keys);
    auto params = vit->parameters();
    const bool cls = std::string(keys).find("cls") != std::string::npos;
    EXPECT_EQ(params[0].first, "patch_embed.weight");
    EXPECT_EQ(params[0].second.sizes(), cls ? at::IntArrayRef({32, 1, 7, 7}) : at::IntArrayRef({32, 1, 4, 4}));
    EXPECT_EQ(params[2].first, cls ? "cls_token" : "pos_embed");
    const at::Tensor& pos = params[cls ? 3 : 2].second;
    EXPECT_EQ(pos.sizes(), cls ? at::IntArrayRef({1, 17, 32}) : at::IntArrayRef({1, 49, 32}));
    EXPECT_EQ(params.back().first, "head.bias");
    TensorMap batch{{"image", at::randn({5, 1, 28, 28})}};
    vit->forward(batch);
    EXPECT_EQ(batch.at("image_emb").sizes(), at::IntArrayRef({5, 10})) << keys;
    batch.at("image_emb").sum().backward();
    for (auto& [n, t] : params) EXPECT_TRUE(t.grad().defined() && at::isfinite(t.grad()).all().item<bool>()) << n;
  }
  EXPECT_THROW(make_encoder("vit", "image_size = 28\npatch_size = 5\n"), PluginError);
  auto vit = make_encoder("vit", "");
  TensorMap wrong{{"image", at::randn({2, 3, 28, 28})}};
  EXPECT_THROW(vit->forward(wrong), PluginError);
}

TEST(VitPlugin, GradientsMatchFiniteDifferences) {
  at::manual_seed(6);
  auto vit = make_encoder("vit", "image_size = 8\npatch_size = 4\nd_model = 16\nn_layers = 2\nn_heads = 2\n"
                                 "out_features = 3\npool = \"cls\"\nattention = \"explicit\"\n");
  auto params = vit->parameters();
  {
    at::NoGradGuard no_grad;  // in double, so that central differences resolve the gradient
    for (auto& [n, t] : params) t.set_data(t.to(at::kDouble) + 0.05 * at::randn(t.sizes(), at::kDouble));
  }
  const at::Tensor image = at::randn({2, 1, 8, 8}, at::kDouble);
  const at::Tensor g = at::randn({2, 3}, at::kDouble);
  auto loss = [&] {
    TensorMap batch{{"image", image}};
    vit->forward(batch);
    return (batch.at("image_emb") * g).sum();
  };
  loss().backward();
  const double eps = 1e-6;
  for (auto& [n, t] : params) {
    const at::Tensor flat = t.detach().view({-1});
    const at::Tensor grad = t.grad().view({-1});
    for (int64_t idx : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      at::NoGradGuard no_grad;
      const double orig = flat[idx].item<double>();
      flat[idx] = orig + eps;
      const double up = loss().item<double>();
      flat[idx] = orig - eps;
      const double down = loss().item<double>();
      flat[idx] = orig;
      const double numeric = (up - down) / (2 * eps), analytic = grad[idx].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 + 1e-5 * std::abs(numeric)) << n << "[" << idx << "]";
    }
  }
}

// ---- text_transformer -----------------------------------------------------------------------------

TEST(TextTransformerPlugin, PaddingDoesNotChangeTheEmbedding) {
  at::manual_seed(7);
  const std::vector<std::string> captions = {"a photo of a sandal", "ankle boot: footwear that covers the whole foot",
                                             "a T-shirt, a close-fitting pullover shirt", "x", ""};
  for (const char* keys : {"pool = \"mean\"\n", "pool = \"last\"\n", "pool = \"mean\"\npositions = \"rotary\"\n",
                           "pool = \"mean\"\nattention = \"explicit\"\ncheckpoint_activations = true\n"}) {
    auto text = make_encoder("text_transformer",
                             std::string("d_model = 32\nn_layers = 2\nn_heads = 4\nout_features = 16\ndropout = 0.1\n") + keys);
    text->set_training(false);
    TensorMap short_batch{{"caption_ids", encode_caption_bytes(captions, 50)}};
    TensorMap long_batch{{"caption_ids", encode_caption_bytes(captions, 130)}};
    TensorMap one{{"caption_ids", encode_caption_bytes({captions[1]}, 47)}};  // exactly its length: no padding
    text->forward(short_batch);
    text->forward(long_batch);
    text->forward(one);
    const at::Tensor& a = short_batch.at("text_emb");
    EXPECT_EQ(a.sizes(), at::IntArrayRef({5, 16})) << keys;
    EXPECT_TRUE(at::isfinite(a).all().item<bool>()) << keys;
    EXPECT_LE((a - long_batch.at("text_emb")).abs().max().item<double>(), 1e-5) << keys;
    EXPECT_LE((a[1] - one.at("text_emb")[0]).abs().max().item<double>(), 1e-5) << keys;
    EXPECT_FALSE(at::allclose(a[0], a[2])) << keys;
    // Gradients reach every parameter and stay finite with an empty caption in the batch.
    text->set_training(true);
    text->forward(long_batch);
    long_batch.at("text_emb").sum().backward();
    for (auto& [n, t] : text->parameters())
      EXPECT_TRUE(t.grad().defined() && at::isfinite(t.grad()).all().item<bool>()) << keys << n;
  }
}

TEST(TextTransformerPlugin, ParametersAndBadInputs) {
  auto text = make_encoder("text_transformer", "d_model = 32\nn_layers = 1\nn_heads = 4\nmax_seq_len = 40\n");
  auto params = text->parameters();
  EXPECT_EQ(params[0].first, "wte.weight");
  EXPECT_EQ(params[0].second.sizes(), at::IntArrayRef({257, 32}));
  EXPECT_EQ(params[1].first, "wpe.weight");
  EXPECT_EQ(params[1].second.sizes(), at::IntArrayRef({40, 32}));
  EXPECT_EQ(params.back().first, "head.bias");
  TensorMap too_long{{"caption_ids", at::ones({2, 41}, at::kLong)}};
  EXPECT_THROW(text->forward(too_long), PluginError);
}

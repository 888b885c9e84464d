// transformer_test.cpp — the block library against references: the explicit attention path against
// SDPA (forward and gradients), rotary positions, the blocks in 16-bit dtypes, and activation
// checkpointing (gradients, dropout, autocast, the parameters' AccumulateGrad hooks) against no checkpointing.
#include <gtest/gtest.h>

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cmath>
#include <limits>
#include <map>

#include "checkpoint.hpp"
#include "transformer.hpp"

namespace tf = tessera::transformer;

namespace {

// The CPU, and the first CUDA device where there is one: every check runs on each.
std::vector<at::Device> devices() {
  std::vector<at::Device> d{at::kCPU};
  if (at::hasCUDA()) d.emplace_back(at::kCUDA, 0);
  return d;
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor af = a.to(at::kDouble), bf = b.to(at::kDouble);
  return ((af - bf).abs().max() / bf.abs().max().clamp_min(1e-30)).item<double>();
}

// The reference attention: LibTorch's scaled dot-product attention. On 1.13 it is the private
// at::_scaled_dot_product_attention (given the mask as an additive float mask, whose meaning does
// not differ between versions); from 2.0 at::scaled_dot_product_attention, with is_causal and a
// bool mask as the plugins' Sdpa path passes them.
at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const tf::AttentionMask& mask) {
  if (tf::kHaveSdpa) return tf::attention(q, k, v, mask, 0.0, tf::AttentionImpl::Sdpa);
  const int64_t t = q.size(2);
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor bias = at::zeros({q.size(0), 1, t, t}, q.options());
  if (mask.causal) bias = bias.masked_fill(at::ones({t, t}, q.options().dtype(at::kBool)).triu(1), -inf);
  if (mask.key_padding.defined()) {
    // An all-padding row attends to every key (the library's rule for rows with nothing to see).
    const at::Tensor keys = mask.key_padding.logical_or(mask.key_padding.logical_not().all(1, true));
    bias = bias.masked_fill(keys.logical_not().view({q.size(0), 1, 1, t}), -inf);
  }
  return std::get<0>(at::_scaled_dot_product_attention(q, k, v, bias, 0.0, false, false));
}

struct AttentionRun {
  at::Tensor out, dq, dk, dv;
};

AttentionRun run_attention(bool reference, const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& v0,
                           const tf::AttentionMask& mask, const at::Tensor& grad) {
  at::Tensor q = q0.detach().clone().requires_grad_(true), k = k0.detach().clone().requires_grad_(true),
             v = v0.detach().clone().requires_grad_(true);
  at::Tensor out = reference ? reference_attention(q, k, v, mask)
                             : tf::attention(q, k, v, mask, 0.0, tf::AttentionImpl::Explicit);
  out.backward(grad);
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

// (B, T) bool: row b holds lengths[b] real tokens, then padding.
at::Tensor padding_mask(const std::vector<int64_t>& lengths, int64_t t) {
  at::Tensor m = at::zeros({static_cast<int64_t>(lengths.size()), t}, at::kBool);
  for (size_t b = 0; b < lengths.size(); ++b) m[static_cast<int64_t>(b)].narrow(0, 0, lengths[b]).fill_(true);
  return m;
}

void expect_attention_agrees(at::ScalarType dtype, double tol, at::Device device) {
  at::manual_seed(5);
  const int64_t b = 4, h = 3, t = 9, d = 8;
  // q, k, v as the blocks make them: views of one (B, T, 3, H, d) tensor, not contiguous.
  const at::Tensor qkv = at::randn({b, t, 3, h, d}).to(device, dtype).permute({2, 0, 3, 1, 4});
  const at::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  const at::Tensor grad = at::randn({b, h, t, d}).to(device, dtype);
  const at::Tensor pad = padding_mask({9, 5, 1, 0}, t).to(device);  // the last row is all padding
  for (const tf::AttentionMask& mask : {tf::AttentionMask{true, {}}, tf::AttentionMask{false, pad},
                                        tf::AttentionMask{true, pad}, tf::AttentionMask{false, {}}}) {
    const std::string what = std::string(mask.causal ? "causal" : "bidirectional") +
                             (mask.key_padding.defined() ? " with padding" : "") + " " + c10::toString(dtype) + " on " +
                             device.str();
    AttentionRun ref = run_attention(true, q, k, v, mask, grad);
    AttentionRun got = run_attention(false, q, k, v, mask, grad);
    EXPECT_EQ(got.out.scalar_type(), dtype) << what;
    EXPECT_TRUE(at::isfinite(got.out).all().item<bool>()) << what;
    EXPECT_LE(max_rel_diff(got.out, ref.out), tol) << what;
    EXPECT_LE(max_rel_diff(got.dq, ref.dq), tol) << what;
    EXPECT_LE(max_rel_diff(got.dk, ref.dk), tol) << what;
    EXPECT_LE(max_rel_diff(got.dv, ref.dv), tol) << what;
  }
}

tf::StackConfig small_config() {
  tf::StackConfig c;
  c.d_model = 32;
  c.n_layers = 3;
  c.n_heads = 4;
  c.d_ff = 0;
  c.validate();
  return c;
}

// bf16 autocast on the device for the scope, as the core's AutocastScope sets it.
class Autocast {
 public:
  Autocast(at::DeviceType type, bool on) : type_(type), on_(on) {
    if (on_) set(true);
  }
  ~Autocast() {
    if (!on_) return;
    set(false);
    at::autocast::clear_cache();
  }

 private:
  void set(bool enabled) const {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(type_, enabled);
    at::autocast::set_autocast_dtype(type_, at::kBFloat16);
#else
    if (type_ == at::kCPU) {
      at::autocast::set_cpu_enabled(enabled);
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    } else {
      at::autocast::set_enabled(enabled);
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    }
#endif
  }
  at::DeviceType type_;
  bool on_;
};

struct StackRun {
  at::Tensor out, dx;
  std::map<std::string, at::Tensor> grads;
  double next_random;  // the generator after backward: the run goes on from the same state
};

// Builds the stack from `seed` (same weights for the same seed), runs forward and backward.
StackRun run_stack(tf::StackConfig cfg, bool checkpoint, const at::Tensor& x0, tf::AttentionMask mask,
                   at::Device device = at::kCPU, at::ScalarType param_dtype = at::kFloat, bool autocast = false) {
  cfg.checkpoint = checkpoint;
  at::manual_seed(21);
  tf::Stack stack(cfg);
  tessera::sdk::Params params;
  stack.append(params);
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : params) p.set_data(p.to(device, param_dtype));
  }
  // The input in the parameters' dtype, as the encoders' embeddings give it.
  at::Tensor x = x0.detach().to(device, param_dtype == at::kFloat ? x0.scalar_type() : param_dtype).clone().requires_grad_(true);
  if (mask.key_padding.defined()) mask.key_padding = mask.key_padding.to(device);
  at::manual_seed(99);  // the dropout masks
  at::Tensor out;
  {
    Autocast scope(device.type(), autocast);
    out = stack.forward(x, mask, /*training=*/true);
  }
  (out.to(at::kFloat).square().sum() * 0.5).backward();
  StackRun r{out.detach(), x.grad(), {}, at::rand({}, at::TensorOptions().device(device)).item<double>()};
  for (auto& [name, p] : params) r.grads[name] = p.grad();
  return r;
}

// Bit for bit on the CPU; to 1e-6 relative on CUDA, whose attention backward kernels may
// accumulate in a different order from one run to the next.
void expect_same_run(const StackRun& a, const StackRun& b, const std::string& what) {
  const bool exact = a.out.is_cpu();
  auto same = [exact](const at::Tensor& x, const at::Tensor& y) {
    return exact ? at::equal(x, y) : max_rel_diff(x, y) <= 1e-6;
  };
  EXPECT_TRUE(same(a.out, b.out)) << what << ": output";
  EXPECT_TRUE(same(a.dx, b.dx)) << what << ": input gradient";
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (const auto& [name, g] : a.grads) {
    ASSERT_TRUE(g.defined() && b.grads.at(name).defined()) << what << ": " << name;
    EXPECT_TRUE(same(g, b.grads.at(name))) << what << ": " << name << " max diff "
                                           << (g - b.grads.at(name)).abs().max().item<double>();
  }
  EXPECT_EQ(a.next_random, b.next_random) << what << ": generator state after backward";
}

}  // namespace

TEST(TransformerAttention, ExplicitAgreesWithSdpaInFp32) {
  for (at::Device device : devices()) expect_attention_agrees(at::kFloat, device.is_cpu() ? 1e-5 : 1e-4, device);
}

TEST(TransformerAttention, ExplicitAgreesWithSdpaInBf16Loosely) {
  for (at::Device device : devices()) expect_attention_agrees(at::kBFloat16, 3e-2, device);
}

TEST(TransformerAttention, PaddingKeysGetNoWeight) {
  // A padded key changes nothing for the real queries: the same rows without the padding agree.
  at::manual_seed(6);
  const at::Tensor q = at::randn({1, 2, 7, 4}), k = at::randn({1, 2, 7, 4}), v = at::randn({1, 2, 7, 4});
  const tf::AttentionMask padded{false, padding_mask({5}, 7)};
  const at::Tensor full = tf::attention(q, k, v, padded, 0.0, tf::AttentionImpl::Explicit);
  const at::Tensor cut = tf::attention(q.narrow(2, 0, 5), k.narrow(2, 0, 5), v.narrow(2, 0, 5), tf::AttentionMask{},
                                       0.0, tf::AttentionImpl::Explicit);
  EXPECT_LE((full.narrow(2, 0, 5) - cut).abs().max().item<double>(), 1e-6);
}

TEST(TransformerRotary, RotatesPairsJAndJPlusHalf) {
  const int64_t t = 5, d = 6;
  tf::Rotary rope(t, d, 10000.0, at::kCPU);
  at::manual_seed(7);
  const at::Tensor x = at::randn({2, 3, t, d});
  const at::Tensor y = rope.apply(x);
  for (int64_t pos = 0; pos < t; ++pos)
    for (int64_t j = 0; j < d / 2; ++j) {
      const double angle = pos * std::pow(10000.0, -2.0 * j / d);
      const at::Tensor a = x.select(2, pos).select(-1, j), b = x.select(2, pos).select(-1, j + d / 2);
      EXPECT_LE((y.select(2, pos).select(-1, j) - (a * std::cos(angle) - b * std::sin(angle))).abs().max().item<double>(), 1e-6);
      EXPECT_LE((y.select(2, pos).select(-1, j + d / 2) - (b * std::cos(angle) + a * std::sin(angle))).abs().max().item<double>(), 1e-6);
    }
}

TEST(TransformerBlock, SixteenBitParametersAndEveryVariant) {
  at::manual_seed(8);
  const at::Tensor x = at::randn({2, 6, 32});
  for (at::Device device : devices()) {
    // fp16 only on CUDA: LibTorch 1.13 has no fp16 layer_norm or matmul on the CPU.
    std::vector<at::ScalarType> dtypes{at::kFloat, at::kBFloat16};
    if (device.is_cuda()) dtypes.push_back(at::kHalf);
    for (at::ScalarType dtype : dtypes) {
      for (int variant = 0; variant < 4; ++variant) {
        tf::StackConfig cfg = small_config();
        cfg.norm = variant & 1 ? tf::NormKind::RmsNorm : tf::NormKind::LayerNorm;
        cfg.mlp = variant & 1 ? tf::MlpKind::SwiGlu : tf::MlpKind::Gelu;
        cfg.rotary = variant & 2;
        cfg.bias = !(variant & 2);
        cfg.dropout = 0.1;
        cfg.d_ff = 0;
        cfg.validate();
        const std::string what = std::string(c10::toString(dtype)) + " variant " + std::to_string(variant) + " on " + device.str();
        const StackRun r = run_stack(cfg, variant & 1, x, tf::AttentionMask{true, padding_mask({6, 3}, 6)}, device, dtype);
        EXPECT_EQ(r.out.scalar_type(), dtype) << what;
        EXPECT_TRUE(at::isfinite(r.out).all().item<bool>()) << what;
        for (const auto& [name, g] : r.grads) {
          EXPECT_EQ(g.scalar_type(), dtype) << what << " " << name;
          EXPECT_TRUE(at::isfinite(g).all().item<bool>()) << what << " " << name;
        }
      }
    }
  }
}

TEST(TransformerBlock, ParameterNamesShapesAndInit) {
  tf::StackConfig cfg = small_config();
  cfg.n_layers = 2;
  cfg.mlp = tf::MlpKind::SwiGlu;
  cfg.d_ff = 0;
  cfg.validate();
  EXPECT_EQ(cfg.d_ff, 128);  // 8/3 * 32 = 85.3 -> the next multiple of 64
  at::manual_seed(1);
  tf::Stack stack(cfg);
  tessera::sdk::Params p;
  stack.append(p);
  std::vector<std::string> names;
  for (auto& [n, t] : p) names.push_back(n);
  EXPECT_EQ(names.size(), 24u);
  EXPECT_EQ(std::vector<std::string>(names.begin(), names.begin() + 12),
            (std::vector<std::string>{"h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.attn.c_attn.weight",
                                      "h.0.attn.c_attn.bias", "h.0.attn.c_proj.weight", "h.0.attn.c_proj.bias",
                                      "h.0.ln_2.weight", "h.0.ln_2.bias", "h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias",
                                      "h.0.mlp.c_proj.weight", "h.0.mlp.c_proj.bias"}));
  EXPECT_EQ(p[2].second.sizes(), at::IntArrayRef({96, 32}));
  EXPECT_EQ(p[8].second.sizes(), at::IntArrayRef({256, 32}));  // gate and up
  EXPECT_EQ(p[10].second.sizes(), at::IntArrayRef({32, 128}));
  EXPECT_TRUE(at::equal(p[0].second, at::ones({32})));
  EXPECT_TRUE(at::equal(p[3].second, at::zeros({96})));
  for (auto& [n, t] : p) EXPECT_TRUE(t.requires_grad()) << n;
  // GPT-2 init: N(0, 0.02), the residual projections N(0, 0.02 / sqrt(2 * 2)).
  EXPECT_NEAR(p[2].second.std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(p[10].second.std().item<double>(), 0.01, 0.001);
}

TEST(TransformerCheckpoint, GradientsAndGeneratorEqualNoCheckpointingWithDropout) {
  at::manual_seed(9);
  const at::Tensor x = at::randn({3, 10, 32});
  for (at::Device device : devices()) {
    for (int variant = 0; variant < 2; ++variant) {
      tf::StackConfig cfg = small_config();
      cfg.dropout = 0.2;
      cfg.rotary = variant == 1;
      if (variant == 1) cfg.attention = tf::AttentionImpl::Explicit;  // else SDPA where LibTorch has it
      const tf::AttentionMask mask =
          variant == 0 ? tf::AttentionMask{true, {}} : tf::AttentionMask{false, padding_mask({10, 4, 7}, 10)};
      const StackRun plain = run_stack(cfg, false, x, mask, device);
      const StackRun ckpt = run_stack(cfg, true, x, mask, device);
      expect_same_run(plain, ckpt, "variant " + std::to_string(variant) + " on " + device.str());
    }
    // The dropout really is on (other masks than none).
    tf::StackConfig cfg = small_config();
    cfg.dropout = 0.2;
    const StackRun a = run_stack(cfg, true, x, tf::AttentionMask{true, {}}, device);
    cfg.dropout = 0.0;
    const StackRun b = run_stack(cfg, true, x, tf::AttentionMask{true, {}}, device);
    EXPECT_FALSE(at::equal(a.out, b.out));
  }
}

TEST(TransformerCheckpoint, RecomputesUnderTheForwardsAutocast) {
  at::manual_seed(10);
  const at::Tensor x = at::randn({2, 8, 32});
  const tf::AttentionMask causal{true, {}};
  for (at::Device device : devices()) {
    tf::StackConfig cfg = small_config();
    cfg.dropout = 0.1;
    const std::string on = " on " + device.str();
    const StackRun plain = run_stack(cfg, false, x, causal, device, at::kFloat, /*autocast=*/true);
    const StackRun ckpt = run_stack(cfg, true, x, causal, device, at::kFloat, /*autocast=*/true);
    expect_same_run(plain, ckpt, "bf16 autocast" + on);
    // ... and the gradients are autocast's (bf16 matmuls), not fp32's.
    const StackRun fp32 = run_stack(cfg, true, x, causal, device, at::kFloat, /*autocast=*/false);
    EXPECT_FALSE(at::equal(fp32.grads.at("h.0.attn.c_attn.weight"), ckpt.grads.at("h.0.attn.c_attn.weight"))) << on;
    // bf16 parameters under bf16 autocast, as the bf16 backends run.
    const StackRun plain16 = run_stack(cfg, false, x, causal, device, at::kBFloat16, true);
    const StackRun ckpt16 = run_stack(cfg, true, x, causal, device, at::kBFloat16, true);
    expect_same_run(plain16, ckpt16, "bf16 parameters" + on);
  }
}

TEST(TransformerCheckpoint, ParametersGradientsPassTheirAccumulateGradHooks) {
  // The core hangs its gradient-ready hooks on the parameters' AccumulateGrad nodes.
  tf::StackConfig cfg = small_config();
  cfg.checkpoint = true;
  tf::Stack stack(cfg);
  tessera::sdk::Params params;
  stack.append(params);
  std::map<std::string, int> fired;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // a tensor holds its own weakly
  for (auto& [name, p] : params) {
    auto acc = torch::autograd::impl::grad_accumulator(p);
    ASSERT_TRUE(acc);
    accumulators.push_back(acc);
    const std::string n = name;
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [&fired, n](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          ++fired[n];
          return outputs;
        }));
  }
  const at::Tensor x = at::randn({2, 5, 32});  // an input without gradient: only the parameters need one
  stack.forward(x, tf::AttentionMask{true, {}}, true).sum().backward();
  for (auto& [name, p] : params) {
    EXPECT_EQ(fired[name], 1) << name;
    EXPECT_TRUE(p.grad().defined()) << name;
  }
  // Without grad mode nothing is kept and nothing recomputed.
  at::NoGradGuard no_grad;
  EXPECT_FALSE(stack.forward(x, tf::AttentionMask{true, {}}, false).requires_grad());
}

TEST(TransformerCheckpoint, GenericFunctionAndUnusedParameters) {
  at::manual_seed(12);
  const at::Tensor w = at::randn({4, 4}).requires_grad_(true), unused = at::randn({3}).requires_grad_(true);
  const at::Tensor x = at::randn({2, 4}).requires_grad_(true);
  auto fn = [&w](const at::Tensor& in) { return at::dropout(at::tanh(in.matmul(w)), 0.5, true); };
  at::manual_seed(13);
  tf::checkpoint(fn, x, {w, unused}).sum().backward();
  const at::Tensor gw = w.grad().clone(), gx = x.grad().clone();
  EXPECT_FALSE(unused.grad().defined());
  w.mutable_grad().reset();
  x.mutable_grad().reset();
  at::manual_seed(13);
  fn(x).sum().backward();
  EXPECT_TRUE(at::equal(gw, w.grad()));
  EXPECT_TRUE(at::equal(gx, x.grad()));
}

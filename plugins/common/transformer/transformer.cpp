// transformer.cpp — the block library: config reading, Linear, norms, the two attention paths,
// rotary positions, the pre-norm block and the (optionally checkpointed) stack.
#include "transformer.hpp"

#include <cmath>
#include <limits>
#include <utility>

#include "checkpoint.hpp"

namespace tessera::transformer {
namespace sdk = tessera::sdk;

// ---- config -------------------------------------------------------------------------------------

StackConfig StackConfig::read(const sdk::Host& host) {
  StackConfig c;
  c.d_model = host.get_int("d_model");
  c.n_layers = host.get_int("n_layers");
  c.n_heads = host.get_int("n_heads");
  c.d_ff = host.get_int("d_ff");
  c.norm = host.get_string("norm") == "rmsnorm" ? NormKind::RmsNorm : NormKind::LayerNorm;
  c.norm_eps = host.get_float("norm_eps");
  c.mlp = host.get_string("mlp") == "swiglu" ? MlpKind::SwiGlu : MlpKind::Gelu;
  c.rotary = host.get_string("positions") == "rotary";
  c.rope_theta = host.get_float("rope_theta");
  c.bias = host.get_bool("bias");
  c.dropout = host.get_float("dropout");
  c.init_std = host.get_float("init_std");
  const std::string attention = host.get_string("attention");
  if (attention == "sdpa" && !kHaveSdpa)
    throw sdk::Error(TSR_ERR_UNSUPPORTED, std::string("attention = \"sdpa\" needs at::scaled_dot_product_attention "
                                                      "(LibTorch >= 2.0); this is LibTorch ") +
                                              TORCH_VERSION + ": use \"auto\" or \"explicit\"");
  c.attention = attention == "explicit" || !kHaveSdpa ? AttentionImpl::Explicit : AttentionImpl::Sdpa;
  c.checkpoint = host.get_bool("checkpoint_activations");
  c.validate();
  return c;
}

void StackConfig::validate() {
  if (d_model % n_heads != 0)
    throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "d_model (" + std::to_string(d_model) +
                                                   ") must be a multiple of n_heads (" + std::to_string(n_heads) + ")");
  if (rotary && d_head() % 2 != 0)
    throw sdk::Error(TSR_ERR_INVALID_ARGUMENT,
                     "positions = \"rotary\" needs an even d_head, got d_model / n_heads = " + std::to_string(d_head()));
  if (d_ff == 0) d_ff = mlp == MlpKind::Gelu ? 4 * d_model : (8 * d_model + 3 * 64 - 1) / (3 * 64) * 64;
}

// ---- layers --------------------------------------------------------------------------------------
namespace {
// The dtype statistics and softmaxes are taken in: fp32 for the 16-bit dtypes, else the input's.
at::ScalarType accumulate_type(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 ? at::kFloat : t;
}
}  // namespace

at::Tensor normal_param(at::IntArrayRef shape, double std) {
  return at::empty(shape).normal_(0.0, std).set_requires_grad(true);
}

Linear::Linear(int64_t in, int64_t out, bool with_bias, double std) : weight(normal_param({out, in}, std)) {
  if (with_bias) bias = at::zeros({out}).set_requires_grad(true);
}

void Linear::append(const std::string& prefix, sdk::Params& out) const {
  out.emplace_back(prefix + "weight", weight);
  if (bias.defined()) out.emplace_back(prefix + "bias", bias);
}

Norm::Norm(int64_t d, NormKind k, double e, bool with_bias)
    : kind(k), eps(e), weight(at::ones({d}).set_requires_grad(true)) {
  if (with_bias && k == NormKind::LayerNorm) bias = at::zeros({d}).set_requires_grad(true);
}

at::Tensor Norm::operator()(const at::Tensor& x) const {
  if (kind == NormKind::LayerNorm) return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
  // RMSNorm, the statistics in fp32 for 16-bit x: x / sqrt(mean(x^2) + eps) * weight.
  const at::Tensor xf = x.to(accumulate_type(x.scalar_type()));
  return (xf * at::rsqrt(xf.square().mean(-1, /*keepdim=*/true) + eps)).to(x.scalar_type()) * weight;
}

void Norm::append(const std::string& prefix, sdk::Params& out) const {
  out.emplace_back(prefix + "weight", weight);
  if (bias.defined()) out.emplace_back(prefix + "bias", bias);
}

// ---- attention ------------------------------------------------------------------------------------
namespace {

// Padding rows that would hide every key see all keys instead (see AttentionMask).
at::Tensor usable_keys(const at::Tensor& key_padding) {  // (B, T) bool
  return key_padding.logical_or(key_padding.logical_not().all(1, /*keepdim=*/true));
}

at::Tensor sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                double dropout_p) {
#if TORCH_VERSION_MAJOR >= 2
  if (!mask.key_padding.defined()) return at::scaled_dot_product_attention(q, k, v, {}, dropout_p, mask.causal);
  const int64_t b = q.size(0), t_q = q.size(2), t_k = k.size(2);
  at::Tensor allowed = usable_keys(mask.key_padding).view({b, 1, 1, t_k});  // true = attend
  if (mask.causal) allowed = allowed.logical_and(at::ones({t_q, t_k}, q.options().dtype(at::kBool)).tril());
  return at::scaled_dot_product_attention(q, k, v, allowed, dropout_p, false);
#else
  (void)q, (void)k, (void)v, (void)mask, (void)dropout_p;
  throw sdk::Error(TSR_ERR_UNSUPPORTED, "at::scaled_dot_product_attention needs LibTorch >= 2.0");
#endif
}

// 0 where a query may attend to a key, -inf where not; (1, 1, T, T), (B, 1, 1, T), (B, 1, T, T) or
// undefined when nothing is hidden. fp32, so adding it promotes low-precision scores to fp32.
at::Tensor additive_mask(const AttentionMask& mask, int64_t t_q, int64_t t_k, at::Device device) {
  const double inf = std::numeric_limits<double>::infinity();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor bias;
  if (mask.causal) bias = at::full({t_q, t_k}, -inf, f32).triu_(1).view({1, 1, t_q, t_k});
  if (mask.key_padding.defined()) {
    const int64_t b = mask.key_padding.size(0);
    at::Tensor pad = at::zeros({b, 1, 1, t_k}, f32).masked_fill_(usable_keys(mask.key_padding).logical_not().view({b, 1, 1, t_k}), -inf);
    bias = bias.defined() ? bias + pad : pad;
  }
  return bias;
}

at::Tensor explicit_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const AttentionMask& mask, double dropout_p) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1));  // (B, H, T, T) in q's dtype
  const at::Tensor bias = additive_mask(mask, q.size(2), k.size(2), q.device());
  // One pass: bias + scale * scores (fp32 when there is a mask), or scale * scores.
  scores = bias.defined() ? at::add(bias, scores, scale) : scores * scale;
  at::Tensor probs = at::softmax(scores, -1, accumulate_type(scores.scalar_type()));
  if (dropout_p > 0) probs = at::dropout(probs, dropout_p, /*train=*/true);
  return at::matmul(probs.to(v.scalar_type()), v);  // (B, H, T, d_head)
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                     double dropout_p, AttentionImpl impl) {
  return impl == AttentionImpl::Sdpa ? sdpa(q, k, v, mask, dropout_p) : explicit_attention(q, k, v, mask, dropout_p);
}

Rotary::Rotary(int64_t t, int64_t d_head, double theta, at::Device device) {
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(device);
  // inv_freq_j = theta^(-2j / d_head), j = 0 .. d_head/2 - 1; angles in fp64, tables in fp32.
  const at::Tensor inv_freq = at::pow(theta, at::arange(0, d_head, 2, f64) / static_cast<double>(d_head)).reciprocal();
  const at::Tensor angles = at::outer(at::arange(t, f64), inv_freq);  // (T, d_head / 2)
  const at::Tensor both = at::cat({angles, angles}, -1);              // (T, d_head)
  cos = both.cos().to(at::kFloat);
  sin = both.sin().to(at::kFloat);
}

at::Tensor Rotary::apply(const at::Tensor& x) const {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
  const auto dtype = x.scalar_type();
  return x * cos.to(dtype) + rotated * sin.to(dtype);
}

// ---- blocks ---------------------------------------------------------------------------------------
at::Tensor train_dropout(const at::Tensor& x, double p, bool training) {
  return p > 0 && training ? at::dropout(x, p, true) : x;
}

Block::Block(const StackConfig& cfg) : cfg_(cfg) {
  const int64_t d = cfg.d_model;
  const double proj_std = cfg.init_std / std::sqrt(2.0 * static_cast<double>(std::max<int64_t>(cfg.n_layers, 1)));
  // Constructed in parameter order, so the init draws follow it.
  ln_1_ = Norm(d, cfg.norm, cfg.norm_eps, cfg.bias);
  c_attn_ = Linear(d, 3 * d, cfg.bias, cfg.init_std);
  attn_proj_ = Linear(d, d, cfg.bias, proj_std);
  ln_2_ = Norm(d, cfg.norm, cfg.norm_eps, cfg.bias);
  c_fc_ = Linear(d, cfg.mlp == MlpKind::SwiGlu ? 2 * cfg.d_ff : cfg.d_ff, cfg.bias, cfg.init_std);
  mlp_proj_ = Linear(cfg.d_ff, d, cfg.bias, proj_std);
  sdk::Params named;
  append("", named);
  for (auto& [name, t] : named) params_.push_back(t);
}

void Block::append(const std::string& prefix, sdk::Params& out) const {
  ln_1_.append(prefix + "ln_1.", out);
  c_attn_.append(prefix + "attn.c_attn.", out);
  attn_proj_.append(prefix + "attn.c_proj.", out);
  ln_2_.append(prefix + "ln_2.", out);
  c_fc_.append(prefix + "mlp.c_fc.", out);
  mlp_proj_.append(prefix + "mlp.c_proj.", out);
}

at::Tensor Block::attend(const at::Tensor& x, const ForwardContext& ctx) const {
  const int64_t b = x.size(0), t = x.size(1), d = cfg_.d_model;
  // (B, T, 3d) -> (3, B, H, T, d_head): views, no copy.
  std::vector<at::Tensor> qkv = c_attn_(x).view({b, t, 3, cfg_.n_heads, cfg_.d_head()}).permute({2, 0, 3, 1, 4}).unbind(0);
  at::Tensor q = qkv[0], k = qkv[1];
  if (ctx.rotary.cos.defined()) {
    q = ctx.rotary.apply(q);
    k = ctx.rotary.apply(k);
  }
  const at::Tensor y = attention(q, k, qkv[2], ctx.mask, ctx.training ? cfg_.dropout : 0.0, cfg_.attention);
  return attn_proj_(y.transpose(1, 2).reshape({b, t, d}));  // heads concatenated
}

at::Tensor Block::mlp(const at::Tensor& x) const {
  if (cfg_.mlp == MlpKind::Gelu) return mlp_proj_(at::gelu(c_fc_(x), "tanh"));
  const std::vector<at::Tensor> gate_up = c_fc_(x).chunk(2, -1);
  return mlp_proj_(at::silu(gate_up[0]) * gate_up[1]);
}

at::Tensor Block::forward(const at::Tensor& x, const ForwardContext& ctx) const {
  at::Tensor h = x + train_dropout(attend(ln_1_(x), ctx), cfg_.dropout, ctx.training);
  return h + train_dropout(mlp(ln_2_(h)), cfg_.dropout, ctx.training);
}

Stack::Stack(const StackConfig& cfg) : cfg_(cfg) {
  blocks_.reserve(static_cast<size_t>(cfg.n_layers));
  for (int64_t i = 0; i < cfg.n_layers; ++i) blocks_.emplace_back(cfg);
}

void Stack::append(sdk::Params& out) const {
  for (size_t i = 0; i < blocks_.size(); ++i) blocks_[i].append("h." + std::to_string(i) + ".", out);
}

at::Tensor Stack::forward(at::Tensor x, AttentionMask mask, bool training) const {
  ForwardContext ctx;
  ctx.mask = std::move(mask);
  ctx.training = training;
  if (cfg_.rotary) ctx.rotary = Rotary(x.size(1), cfg_.d_head(), cfg_.rope_theta, x.device());
  if (!cfg_.checkpoint) {
    for (const Block& b : blocks_) x = b.forward(x, ctx);
    return x;
  }
  // The closures share ctx (masks, tables) until the graph is freed.
  auto shared = std::make_shared<const ForwardContext>(std::move(ctx));
  for (const Block& b : blocks_) {
    const Block* block = &b;
    x = checkpoint([block, shared](const at::Tensor& in) { return block->forward(in, *shared); }, x, b.params_);
  }
  return x;
}

}  // namespace tessera::transformer

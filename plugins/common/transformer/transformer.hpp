// transformer.hpp — the transformer block library the gpt, vit and text_transformer encoders share:
// config keys, Linear, LayerNorm/RMSNorm, attention (SDPA or explicit), pre-norm blocks, the stack.
//
// A block is GPT-2's pre-norm block: x = x + drop(attn(norm_1(x))); x = x + drop(mlp(norm_2(x))),
// parameters named like nanoGPT's (ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj) and
// initialised like GPT-2 (weights N(0, init_std), residual projections N(0, init_std / sqrt(2 L)),
// biases 0, norm weights 1). Parameters may be kept in fp32, bf16 or fp16, inputs may come in the
// autocast dtype; every op runs on the tensors' device.
#pragma once

#include <tessera/plugin.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::transformer {

// ---- config -------------------------------------------------------------------------------------
// The keys of the block stack, shared by every transformer encoder; the plugin's kKeys array lists
// them after its own: TESSERA_TRANSFORMER_KEYS("768", "12", "12") with its defaults of d_model,
// n_layers and n_heads. Read them with StackConfig::read.
#define TESSERA_TRANSFORMER_KEYS(D_MODEL, N_LAYERS, N_HEADS)                                                     \
  tessera::sdk::key_int("d_model", D_MODEL, "width of the residual stream (a multiple of n_heads)", 1, 1 << 16), \
      tessera::sdk::key_int("n_layers", N_LAYERS, "transformer blocks", 0, 1024),                              \
      tessera::sdk::key_int("n_heads", N_HEADS, "attention heads; d_model / n_heads per head", 1, 1024),       \
      tessera::sdk::key_int("d_ff", "0",                                                                         \
                            "hidden width of the MLP; 0 = 4 * d_model (gelu), the multiple of 64 at or above "  \
                            "8/3 * d_model (swiglu)",                                                            \
                            0, 1 << 20),                                                                         \
      tessera::sdk::key_enum("norm", "\"layernorm\"", "pre-norm of each block and the final norm",              \
                             "layernorm|rmsnorm"),                                                               \
      tessera::sdk::key_float("norm_eps", "1e-5", "epsilon of the norms", 0.0, 1.0),                            \
      tessera::sdk::key_enum("mlp", "\"gelu\"",                                                                  \
                             "gelu: Linear -> GELU (tanh approximation) -> Linear; swiglu: Linear to (gate, up) " \
                             "-> silu(gate) * up -> Linear",                                                     \
                             "gelu|swiglu"),                                                                     \
      tessera::sdk::key_enum("positions", "\"learned\"",                                                         \
                             "learned: an embedding per position added to the input; rotary: q and k rotated "  \
                             "per head (rotate-half pairs j, j + d_head/2)",                                     \
                             "learned|rotary"),                                                                  \
      tessera::sdk::key_float("rope_theta", "10000.0", "rotary base: angle = pos * theta^(-2j/d_head)", 1.0,    \
                              1e12),                                                                             \
      tessera::sdk::key_bool("bias", "true", "biases in every Linear and LayerNorm"),                            \
      tessera::sdk::key_float("dropout", "0.0",                                                                  \
                              "dropout on the embeddings, attention probabilities and residual branches "        \
                              "(training only)",                                                                 \
                              0.0, 1.0),                                                                         \
      tessera::sdk::key_float("init_std", "0.02",                                                                \
                              "std of the normal init; residual projections get init_std / sqrt(2 n_layers)",   \
                              0.0, 10.0),                                                                        \
      tessera::sdk::key_enum("attention", "\"auto\"",                                                            \
                             "auto: sdpa where LibTorch >= 2.0 has at::scaled_dot_product_attention (flash / "  \
                             "memory-efficient kernels on CUDA), else explicit; explicit: softmax(q k^T / "      \
                             "sqrt(d_head) + mask) @ v, the softmax in fp32",                                    \
                             "auto|sdpa|explicit"),                                                              \
      tessera::sdk::key_bool("checkpoint_activations", "false",                                                  \
                             "keep only each block's input in the forward and recompute the block in backward "  \
                             "(less activation memory, one more forward)")

enum class NormKind { LayerNorm, RmsNorm };
enum class MlpKind { Gelu, SwiGlu };
enum class AttentionImpl { Sdpa, Explicit };

// Whether this LibTorch has at::scaled_dot_product_attention (>= 2.0).
constexpr bool kHaveSdpa =
#if TORCH_VERSION_MAJOR >= 2
    true;
#else
    false;
#endif

struct StackConfig {
  int64_t d_model = 768, n_layers = 12, n_heads = 12, d_ff = 3072;  // d_ff resolved (never 0)
  NormKind norm = NormKind::LayerNorm;
  double norm_eps = 1e-5;
  MlpKind mlp = MlpKind::Gelu;
  bool rotary = false;
  double rope_theta = 10000.0;
  bool bias = true;
  double dropout = 0.0;
  double init_std = 0.02;
  AttentionImpl attention = kHaveSdpa ? AttentionImpl::Sdpa : AttentionImpl::Explicit;
  bool checkpoint = false;

  int64_t d_head() const { return d_model / n_heads; }
  // Reads the TESSERA_TRANSFORMER_KEYS keys and checks them together (throws sdk::Error).
  static StackConfig read(const tessera::sdk::Host& host);
  // Resolves and checks the derived fields (d_ff = 0, divisibility, sdpa available).
  void validate();
};

// ---- layers --------------------------------------------------------------------------------------
// N(0, std) leaf that requires grad (float32; the core converts it to the backend's dtype).
at::Tensor normal_param(at::IntArrayRef shape, double std);

// y = x W^T + b, stored like torch.nn.Linear.
struct Linear {
  at::Tensor weight;  // (out, in)
  at::Tensor bias;    // (out,), undefined without biases
  Linear() = default;
  Linear(int64_t in, int64_t out, bool bias, double std);
  at::Tensor operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }
  void append(const std::string& prefix, tessera::sdk::Params& out) const;
};

// LayerNorm (weight, optional bias) or RMSNorm (weight only) over the last dim.
struct Norm {
  NormKind kind = NormKind::LayerNorm;
  double eps = 1e-5;
  at::Tensor weight;  // (d,) ones
  at::Tensor bias;    // (d,) zeros; undefined for RMSNorm or without biases
  Norm() = default;
  Norm(int64_t d, NormKind kind, double eps, bool bias);
  at::Tensor operator()(const at::Tensor& x) const;
  void append(const std::string& prefix, tessera::sdk::Params& out) const;
};

// ---- attention ------------------------------------------------------------------------------------
// Which keys a query may attend to: later positions are hidden when causal; padding keys are hidden
// by key_padding. A query whose every key would be hidden (an all-padding row) attends to all keys
// instead, so no softmax row is empty: such rows are padding, which callers pool away.
struct AttentionMask {
  bool causal = false;
  at::Tensor key_padding;  // (B, T) bool, true = a real token; undefined = no padding
};

// softmax(q k^T / sqrt(d_head) + mask) @ v with dropout on the probabilities (dropout_p > 0 only
// in training). q, k, v: (B, H, T, d_head), any strides, one dtype. Returns (B, H, T, d_head).
// Sdpa: at::scaled_dot_product_attention (LibTorch >= 2.0). Explicit: scores in the inputs' dtype,
// the mask added and the softmax taken in fp32, probabilities cast back to v's dtype.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                     double dropout_p, AttentionImpl impl);

// Rotary position tables for positions 0..T-1: cos and sin of pos * theta^(-2j/d_head), each
// repeated over the two halves of a head ('rotate-half' pairs j and j + d_head/2).
struct Rotary {
  at::Tensor cos;  // (T, d_head) fp32
  at::Tensor sin;  // (T, d_head) fp32
  Rotary() = default;
  Rotary(int64_t T, int64_t d_head, double theta, at::Device device);
  // x: (B, H, T, d_head) -> x * cos + rotate_half(x) * sin, in x's dtype.
  at::Tensor apply(const at::Tensor& x) const;
};

// Dropout with probability p in training, the identity otherwise (and for p = 0).
at::Tensor train_dropout(const at::Tensor& x, double p, bool training);

// ---- blocks ---------------------------------------------------------------------------------------
// What one forward shares between the blocks.
struct ForwardContext {
  AttentionMask mask;
  Rotary rotary;          // empty unless positions = rotary
  bool training = false;  // dropout on
};

class Block {
 public:
  explicit Block(const StackConfig& cfg);
  // x: (B, T, d_model) -> (B, T, d_model).
  at::Tensor forward(const at::Tensor& x, const ForwardContext& ctx) const;
  // ln_1.weight, ln_1.bias, attn.c_attn.{weight,bias}, attn.c_proj.{weight,bias}, ln_2.*, mlp.c_fc.*,
  // mlp.c_proj.* after `prefix` (e.g. "h.3.").
  void append(const std::string& prefix, tessera::sdk::Params& out) const;

 private:
  at::Tensor attend(const at::Tensor& x, const ForwardContext& ctx) const;
  at::Tensor mlp(const at::Tensor& x) const;
  StackConfig cfg_;
  Norm ln_1_, ln_2_;
  Linear c_attn_;    // (3 d, d): rows q, k, v, each split into (n_heads, d_head)
  Linear attn_proj_; // (d, d)
  Linear c_fc_;      // (d_ff, d), or (2 d_ff, d) for swiglu: rows gate then up
  Linear mlp_proj_;  // (d, d_ff)
  std::vector<at::Tensor> params_;  // every parameter above, for the checkpoint's backward
  friend class Stack;
};

// n_layers blocks, each optionally recomputed in backward (checkpoint_activations).
class Stack {
 public:
  explicit Stack(const StackConfig& cfg);
  // x: (B, T, d_model) -> (B, T, d_model). Builds the rotary tables once when positions = rotary.
  at::Tensor forward(at::Tensor x, AttentionMask mask, bool training) const;
  // h.{i}.<block parameters> for every block.
  void append(tessera::sdk::Params& out) const;
  const StackConfig& config() const { return cfg_; }

 private:
  StackConfig cfg_;
  std::vector<Block> blocks_;
};

}  // namespace tessera::transformer

// plugins/precision/fp32/fp32.cpp — precision backend "fp32": fp32 parameters, gradients and
// optimizer states, no master copy; updates its flat shard with the kernels/ CPU loops.
#include <tessera/plugin.hpp>

#include <tessera/kernels/optim.h>

#include <map>

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_bool("check_finite_grads", "false",
                           "refuse a step whose gradients contain NaN/Inf (costs one pass over the gradients)"),
};

class Fp32 : public tessera::sdk::Precision {
 public:
  explicit Fp32(const tessera::sdk::Host& host) : host_(host), check_finite_(host.get_bool("check_finite_grads")) {}
  ~Fp32() override {
    for (auto& [name, s] : states_) {
      host_.release(s.exp_avg);
      host_.release(s.exp_avg_sq);
    }
  }

  tsr_precision_info describe() override {
    return {sizeof(tsr_precision_info), TSR_DTYPE_F32, TSR_DTYPE_F32, TSR_MASTER_NONE, TSR_DTYPE_F32, TSR_DTYPE_NONE};
  }

  void init_shard(const tsr_flat_shard& shard) override {
    if (shard.param_dtype != TSR_DTYPE_F32 || shard.grad_dtype != TSR_DTYPE_F32)
      throw tessera::sdk::Error(TSR_ERR_TYPE, "fp32 backend got a non-fp32 shard '" + std::string(shard.name) + "'");
    const tsr_host* h = host_.raw();
    State s;
    const std::string base = std::string(shard.name) + ".";
    check(h->alloc_state(h->ctx, (base + "exp_avg").c_str(), TSR_STATE_OPTIMIZER, TSR_DTYPE_F32, shard.numel, &s.exp_avg));
    check(h->alloc_state(h->ctx, (base + "exp_avg_sq").c_str(), TSR_STATE_OPTIMIZER, TSR_DTYPE_F32, shard.numel,
                         &s.exp_avg_sq));
    states_[shard.name] = s;
  }

  void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    auto it = states_.find(shard.name);
    if (it == states_.end())
      throw tessera::sdk::Error(TSR_ERR_INVALID_ARGUMENT, "step on shard '" + std::string(shard.name) + "' before init_shard");
    const tsr_host* h = host_.raw();
    auto* p = static_cast<float*>(h->tensor_data(shard.params));
    auto* g = static_cast<const float*>(h->tensor_data(shard.grads));
    if (check_finite_ && !tessera::kernels::all_finite_f32(g, shard.numel))
      throw tessera::sdk::Error(TSR_ERR_RUNTIME, "non-finite gradient in shard '" + std::string(shard.name) + "'");
    auto* m = static_cast<float*>(h->tensor_data(it->second.exp_avg));
    auto* v = static_cast<float*>(h->tensor_data(it->second.exp_avg_sq));
    if (opt.algorithm == TSR_OPTIM_ADAMW) {
      tessera::kernels::AdamWArgs a;
      a.lr = opt.lr;
      a.beta1 = opt.beta1;
      a.beta2 = opt.beta2;
      a.eps = opt.eps;
      a.weight_decay = opt.weight_decay;
      a.step = opt.step;
      a.grad_scale = opt.grad_scale;
      tessera::kernels::adamw_f32(p, g, m, v, shard.numel, a);
    } else if (opt.algorithm == TSR_OPTIM_SGD) {
      tessera::kernels::SgdArgs a;
      a.lr = opt.lr;
      a.momentum = opt.momentum;
      a.weight_decay = opt.weight_decay;
      a.nesterov = opt.nesterov != 0;
      a.first_step = opt.step == 1;
      a.grad_scale = opt.grad_scale;
      tessera::kernels::sgd_f32(p, g, m, shard.numel, a);  // exp_avg doubles as the momentum buffer
    } else {
      throw tessera::sdk::Error(TSR_ERR_UNSUPPORTED, "unknown optimizer algorithm " + std::to_string(opt.algorithm));
    }
  }

 private:
  struct State {
    tsr_tensor* exp_avg = nullptr;     // (numel,) f32; SGD: momentum buffer
    tsr_tensor* exp_avg_sq = nullptr;  // (numel,) f32; unused by SGD
  };
  void check(tsr_status s) {
    if (s != TSR_OK) throw tessera::sdk::Error(s, "could not allocate optimizer state");
  }
  const tessera::sdk::Host& host_;
  bool check_finite_;
  std::map<std::string, State> states_;
};

}  // namespace

TESSERA_PLUGIN(Fp32, tessera::sdk::Precision, "fp32", "1.0.0",
               "Full fp32: parameters, gradients and optimizer moments in fp32, no master copy "
               "(AdamW: 16 bytes/parameter).",
               kKeys)

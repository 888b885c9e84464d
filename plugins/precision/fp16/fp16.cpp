// plugins/precision/fp16/fp16.cpp — precision backend "fp16": fp16 compute (autocast fp16),
// fp32 master and states (storage F16MasterF32), dynamic loss scaling with skipped, counted overflow steps.
#include "../common/flat_backend.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_float("initial_scale", "65536.0", "loss scale at the start", 1e-30, 1e30),
    tessera::sdk::key_int("growth_interval", "2000", "steps without overflow before the scale grows", 1, 1e9),
    tessera::sdk::key_float("growth_factor", "2.0", "multiplies the scale after growth_interval clean steps", 1.0, 1e3),
    tessera::sdk::key_float("backoff_factor", "0.5", "multiplies the scale after an overflow", 1e-6, 1.0),
    tessera::sdk::key_int("hysteresis", "2", "overflows tolerated before the scale backs off", 1, 1e6),
    tessera::sdk::key_float("min_scale", "1.0", "reaching this scale with a further overflow stops training", 1e-30, 1e30),
    tessera::sdk::key_bool("autocast", "true", "run the forward pass under fp16 autocast"),
};

class Fp16 : public tessera::precision::FlatBackend {
 public:
  explicit Fp16(const tessera::sdk::Host& host)
      : FlatBackend(host, tessera::precision::kFp16Layout, host.get_bool("autocast") ? TSR_DTYPE_F16 : TSR_DTYPE_NONE),
        growth_interval_(host.get_int("growth_interval")), growth_(host.get_float("growth_factor")),
        backoff_(host.get_float("backoff_factor")), hysteresis_(host.get_int("hysteresis")),
        min_scale_(host.get_float("min_scale")) {
    own_[kScale] = host.get_float("initial_scale");
    own_[kCleanSteps] = 0;
    own_[kHysteresisLeft] = static_cast<double>(hysteresis_);
    own_[kOverflows] = 0;
  }
  ~Fp16() override {
    if (scalars_) host_.release(scalars_);
  }

  // After the shard's own buffers, once per instance: the scaler's state moves into a
  // TSR_STATE_SCALARS buffer, which checkpoints keep (a core older than ABI 1.4 has none, and
  // a resumed run there starts again from initial_scale).
  void init_shard_for(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    FlatBackend::init_shard_for(shard, opt);
    const tsr_host* h = host_.raw();
    if (scalars_ || h->abi_minor < 4) return;
    tsr_status st = h->alloc_state(h->ctx, "loss_scaler", TSR_STATE_SCALARS, TSR_DTYPE_F64, kScalars, &scalars_);
    if (st != TSR_OK) throw tessera::sdk::Error(st, "could not allocate the loss scaler's state");
    double* kept = static_cast<double*>(h->tensor_data(scalars_));
    std::copy(own_, own_ + kScalars, kept);
    s_ = kept;
  }

  double loss_scale() override { return s_[kScale]; }
  bool find_overflow(const tsr_flat_shard& shard) override {
    const uint16_t* g = grads<uint16_t>(shard);
    const int64_t n = shard.numel;
    return !on_device(shard, [&] { return tessera::kernels::all_finite_f16(g, n); },
                      [&](auto stream) { return tessera::kernels::cuda::all_finite_f16(g, n, stream); });
  }
  // Dynamic loss scaling as in Megatron/DeepSpeed: back off after `hysteresis` overflows, grow
  // after `growth_interval` clean steps; an overflow at the minimum scale is an error.
  bool update_scale(bool found_inf) override {
    double& scale = s_[kScale];
    double& clean_steps = s_[kCleanSteps];
    double& hysteresis_left = s_[kHysteresisLeft];
    if (!found_inf) {
      if (++clean_steps >= static_cast<double>(growth_interval_)) {
        scale *= growth_;
        clean_steps = 0;
        hysteresis_left = static_cast<double>(hysteresis_);
      }
      return false;
    }
    ++s_[kOverflows];
    clean_steps = 0;
    if (--hysteresis_left <= 0) {
      if (scale <= min_scale_) {
        std::ostringstream msg;
        msg << "gradients overflow even at the minimum loss scale " << min_scale_ << " (" << s_[kOverflows]
            << " overflowing steps so far); the loss or the model diverged — lower the learning rate, or use bf16";
        throw tessera::sdk::Error(TSR_ERR_RUNTIME, msg.str());
      }
      scale = std::max(scale * backoff_, min_scale_);
      hysteresis_left = static_cast<double>(hysteresis_);
      host_.info("gradient overflow: loss scale lowered to " + std::to_string(scale));
    }
    return true;  // an overflowed step is always skipped
  }

 private:
  // The scaler's state, all exact in double: the loss scale, clean steps since the last change,
  // overflows left before the next back-off, overflowing steps so far.
  enum { kScale, kCleanSteps, kHysteresisLeft, kOverflows, kScalars };
  int64_t growth_interval_;
  double growth_, backoff_;
  int64_t hysteresis_;
  double min_scale_;
  double own_[kScalars];         // before the first shard is initialised
  double* s_ = own_;             // own_, then the TSR_STATE_SCALARS buffer
  tsr_tensor* scalars_ = nullptr;
};

}  // namespace

TESSERA_PLUGIN(Fp16, tessera::sdk::Precision, "fp16", "1.2.0",
               "fp16 compute with fp32 master weights and moments and dynamic loss scaling; overflowed steps are "
               "skipped and counted (AdamW: 2 + 2 + 4 + 8 = 16 bytes/parameter; SGD with momentum or Lion 12). Needs a device that computes fp16.",
               kKeys)

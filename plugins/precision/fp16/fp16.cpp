// plugins/precision/fp16/fp16.cpp — precision backend "fp16": fp16 compute (autocast fp16),
// fp32 master and states (storage F16MasterF32), dynamic loss scaling with skipped, counted overflow steps.
#include "../common/flat_backend.hpp"

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
        scale_(host.get_float("initial_scale")),
        growth_interval_(host.get_int("growth_interval")), growth_(host.get_float("growth_factor")),
        backoff_(host.get_float("backoff_factor")), hysteresis_(host.get_int("hysteresis")),
        min_scale_(host.get_float("min_scale")), hysteresis_left_(hysteresis_) {}

  double loss_scale() override { return scale_; }
  bool find_overflow(const tsr_flat_shard& shard) override {
    const uint16_t* g = grads<uint16_t>(shard);
    const int64_t n = shard.numel;
    return !on_device(shard, [&] { return tessera::kernels::all_finite_f16(g, n); },
                      [&](auto stream) { return tessera::kernels::cuda::all_finite_f16(g, n, stream); });
  }
  // Dynamic loss scaling as in Megatron/DeepSpeed: back off after `hysteresis` overflows, grow
  // after `growth_interval` clean steps; an overflow at the minimum scale is an error.
  bool update_scale(bool found_inf) override {
    if (!found_inf) {
      if (++clean_steps_ >= growth_interval_) {
        scale_ *= growth_;
        clean_steps_ = 0;
        hysteresis_left_ = hysteresis_;
      }
      return false;
    }
    ++overflows_;
    clean_steps_ = 0;
    if (--hysteresis_left_ <= 0) {
      if (scale_ <= min_scale_) {
        std::ostringstream msg;
        msg << "gradients overflow even at the minimum loss scale " << min_scale_ << " (" << overflows_
            << " overflowing steps so far); the loss or the model diverged — lower the learning rate, or use bf16";
        throw tessera::sdk::Error(TSR_ERR_RUNTIME, msg.str());
      }
      scale_ = std::max(scale_ * backoff_, min_scale_);
      hysteresis_left_ = hysteresis_;
      host_.info("gradient overflow: loss scale lowered to " + std::to_string(scale_));
    }
    return true;  // an overflowed step is always skipped
  }

 private:
  double scale_;
  int64_t growth_interval_;
  double growth_, backoff_;
  int64_t hysteresis_;
  double min_scale_;
  int64_t hysteresis_left_, clean_steps_ = 0, overflows_ = 0;
};

}  // namespace

TESSERA_PLUGIN(Fp16, tessera::sdk::Precision, "fp16", "1.1.0",
               "fp16 compute with fp32 master weights and moments and dynamic loss scaling; overflowed steps are "
               "skipped and counted (AdamW: 2 + 2 + 4 + 8 = 16 bytes/parameter; SGD with momentum or Lion 12). Needs a device that computes fp16.",
               kKeys)

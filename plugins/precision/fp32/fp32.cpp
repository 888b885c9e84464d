// plugins/precision/fp32/fp32.cpp — precision backend "fp32": fp32 parameters, gradients and
// optimizer states, no master copy; storage kernels::Storage::F32.
#include "../common/flat_backend.hpp"

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_bool("check_finite_grads", "false",
                           "refuse a step whose gradients contain NaN/Inf (costs one pass over the gradients)"),
};

class Fp32 : public tessera::precision::FlatBackend {
 public:
  explicit Fp32(const tessera::sdk::Host& host)
      : FlatBackend(host, tessera::precision::kFp32Layout, TSR_DTYPE_NONE),
        check_finite_(host.get_bool("check_finite_grads")) {}

  void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    namespace k = tessera::kernels;
    const float* g = grads<float>(shard);
    const int64_t n = shard.numel;
    if (check_finite_ && !on_device(shard, [&] { return k::all_finite_f32(g, n); },
                                    [&](auto stream) { return k::cuda::all_finite_f32(g, n, stream); }))
      throw tessera::sdk::Error(TSR_ERR_RUNTIME, "non-finite gradient in shard '" + std::string(shard.name) + "'");
    FlatBackend::step(shard, opt);
  }

 private:
  bool check_finite_;
};

}  // namespace

TESSERA_PLUGIN(Fp32, tessera::sdk::Precision, "fp32", "1.1.0",
               "Full fp32: parameters, gradients and optimizer states in fp32, no master copy "
               "(AdamW: 16 bytes/parameter; SGD with momentum 12; Lion 12).",
               kKeys)

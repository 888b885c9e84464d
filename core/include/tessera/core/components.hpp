// tessera/core/components.hpp — the plugin instances of one experiment, built from the config
// and the registry: encoders (in config order), loss reducers and the precision backend.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tessera/core/comm.hpp"
#include "tessera/core/flat_params.hpp"
#include "tessera/core/grad_sync.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "tessera/core/tensor_map.hpp"

namespace tessera {

// Seeds the global generator for one plugin instance ("encoder.<name>", "loss.<name>") from
// the experiment seed, so each component's initial weights depend on its name only.
void seed_for_instance(uint64_t seed, const std::string& name);

class Components {
 public:
  // Resolves each slot's plugin in `registry`, validates its table against the core's slot
  // keys plus the plugin's own, creates the instances (each seeded by its name) and registers
  // their parameters with `params` as "<instance name>.<parameter name>". `states` receives
  // the precision backend's buffers. Checks that `device` computes the backend's dtypes.
  Components(const Config& config, const PluginRegistry& registry, uint64_t seed, FlatParams& params,
             StateStore* states, at::Device device);

  // Data parallel: the losses with `gather` see those batch tensors all-gathered across ranks
  // (with gradient). Without a call (one rank) every loss sees this rank's batch as it is.
  void gather_across(Comm& comm);
  // Throws ConfigError naming the first loss that gathers, with `why` it cannot here.
  void refuse_gather(const std::string& why) const;

  // Every encoder in config order: each reads named inputs from `batch` and writes outputs.
  // `sync` (optional) is told before and after each encoder runs: the seam where ZeRO-3 will
  // gather an encoder's parameters and free them again.
  void forward(TensorMap& batch, GradSync* sync = nullptr) const;
  // The terms of every loss reducer for `batch`, each weighted by its [[loss]] weight and
  // tagged with the index of its [[loss]]. gather = false: every loss sees this rank's batch
  // as it is (an evaluation on one rank).
  std::vector<Term> terms(const TensorMap& batch, bool gather = true) const;
  // Per [[loss]]: the units (tokens) its sum terms cover in `batch` (the dataset's tensors),
  // -1 for a loss that does not count units.
  std::vector<int64_t> count_units(const TensorMap& batch) const;
  bool counts_units() const;  // whether any loss counts units
  // Model FLOPs of forward + backward over `batch` (after forward), summed over the encoders
  // that count them; 0 when none does.
  double flops(const TensorMap& batch) const;
  const std::string& loss_label(size_t i) const { return losses_[i]->label(); }
  void set_training(bool training) const;
  // Every encoder's non-trained buffers by qualified name ("<instance>.<buffer>").
  std::vector<std::pair<std::string, at::Tensor>> encoder_buffers() const;

  PrecisionInstance& precision() const { return *precision_; }
  const tsr_precision_info& precision_info() const { return precision_info_; }
  // One line per component, for the log and `tessera check`.
  std::string describe() const;
  // Every slot's validated table, defaults filled in: [[encoder]], [[loss]] and [precision] of `root`.
  void resolved_tables(toml::table& root) const;

 private:
  void check_device_computes(int32_t dtype, const char* role, at::Device device) const;
  // What one loss reads: the batch itself, or (gather) a copy with some tensors all-gathered.
  using InputView = std::function<TensorMap(const TensorMap&)>;

  std::vector<std::unique_ptr<EncoderInstance>> encoders_;
  std::vector<std::unique_ptr<LossInstance>> losses_;
  std::vector<double> loss_weights_;
  std::vector<InputView> loss_inputs_;  // empty entries: the batch as it is
  mutable std::vector<bool> counts_units_;  // per loss: it counts units (ABI 1.3), until it says -1
  std::unique_ptr<PrecisionInstance> precision_;
  tsr_precision_info precision_info_{};
};

}  // namespace tessera

// tessera/core/runtime.hpp — process setup that belongs to the program, not to an experiment
// object: log level, allocator tuning, intra-op threads, and the device this rank trains on.
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "tessera/core/comm.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/options.hpp"

namespace tessera {

// Log level ([experiment] log_level on rank 0, warnings only on other ranks), glibc malloc
// tuning (large freed blocks stay in the heap instead of being page-faulted back every step),
// and at::set_num_threads ([experiment] threads; 0 = all cores). Called once by the CLI before
// the experiment is built.
void setup_process(const ExperimentOptions& experiment, const DistEnv& env);
// The same from a config file's [experiment] table (validated there).
void setup_process(const Config& config);

// The intra-op threads for [experiment] threads = `configured`: itself when > 0; for 0,
// OMP_NUM_THREADS when it is a positive number, else the machine's cores / LOCAL_WORLD_SIZE
// (at least 1).
int intra_op_threads(int64_t configured);

// SIGINT and SIGTERM ask training to stop at the next step boundary (a second one ends the
// process at once, as usual). stop_requested() is the signal received, 0 for none.
void install_stop_signals();
int stop_requested();

// The device of this rank: CPU, or with device = "cuda" one GPU per LOCAL_RANK (ranks share
// GPUs when there are fewer). Throws ConfigError when this LibTorch sees no CUDA device.
at::Device training_device(const ExperimentOptions& experiment, const DistEnv& env);

// The peak dense FLOP/s of `device` computing in `dtype`, from a table of data-centre GPUs
// (tensor cores for 16-bit types, plain fp32 otherwise: LibTorch does not use TF32 by default);
// 0 when unknown, e.g. for every CPU.
double device_peak_flops(at::Device device, at::ScalarType dtype);

// What the CUDA caching allocator holds for tensors on `device` now and at its peak, MiB; nullopt
// on a CPU (or a build without CUDA).
struct DeviceMemory {
  double allocated_mib = 0, peak_mib = 0;
};
std::optional<DeviceMemory> device_memory(at::Device device);

}  // namespace tessera

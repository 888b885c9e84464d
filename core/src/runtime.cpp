// core/src/runtime.cpp — process setup (log level, malloc tuning, threads) and the choice of
// this rank's device.
#include "tessera/core/runtime.hpp"

#include <ATen/Parallel.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <dlfcn.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

// The GPU's name for the peak-FLOPs table: only a build against LibTorch with CUDA has it.
#if defined(TESSERA_HAVE_CUDA) && __has_include(<ATen/cuda/CUDAContext.h>) && __has_include(<cuda_runtime_api.h>)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#define TESSERA_DEVICE_NAMES 1
#endif

namespace tessera {

void setup_process(const ExperimentOptions& experiment, const DistEnv& env) {
  spdlog::set_level(env.rank == 0 ? spdlog::level::from_str(experiment.log_level) : spdlog::level::warn);
  // The other ranks' lines (warnings and errors) say whose they are.
  if (env.rank > 0) spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [rank " + std::to_string(env.rank) + "] [%^%l%$] %v");
  // glibc returns large freed blocks to the OS at once; every step then page-faults its
  // activations back in (~25% of a CPU step here). Keep them in the heap instead.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  const int threads = intra_op_threads(experiment.threads);
  at::set_num_threads(threads);
  // OpenBLAS (Debian's LibTorch does its fp32 matmuls there) keeps a thread pool of its own that
  // at::set_num_threads does not size: ranks sharing a machine would each spin on every core.
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(threads);
}

int intra_op_threads(int64_t configured) {
  if (configured > 0) return static_cast<int>(configured);
  // 0: OMP_NUM_THREADS when set, else the cores divided among this machine's ranks
  // (LOCAL_WORLD_SIZE, as tessera launch and torchrun set it), so ranks never oversubscribe.
  auto positive_env = [](const char* name) -> int {
    const char* v = std::getenv(name);
    if (!v || !*v) return 0;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    return (*end == '\0' && n > 0 && n <= 4096) ? static_cast<int>(n) : 0;
  };
  if (const int omp = positive_env("OMP_NUM_THREADS")) return omp;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int local = std::max(1, positive_env("LOCAL_WORLD_SIZE"));
  return std::max(1, cores / local);
}

void setup_process(const Config& config) {
  setup_process(ExperimentOptions::from(config.resolve(config.table("experiment"), experiment_schema(), "[experiment]")),
                DistEnv::from_env());
}

namespace {
std::atomic<int> g_stop_signal{0};
void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
  ::signal(sig, SIG_DFL);  // a second one is not caught
}
}  // namespace

void install_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESTART;  // collectives' system calls carry on
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int stop_requested() { return g_stop_signal.load(); }

at::Device training_device(const ExperimentOptions& experiment, const DistEnv& env) {
  if (experiment.device != "cuda") return at::kCPU;
  if (!at::hasCUDA())
    throw ConfigError(experiment.section.where("device").str() +
                      ": device = \"cuda\" but this build of LibTorch sees no CUDA device");
  const int gpus = std::max(1, static_cast<int>(c10::impl::getDeviceGuardImpl(at::kCUDA)->deviceCount()));
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank % gpus));
}

std::optional<DeviceMemory> device_memory(at::Device device) {
  if (!device.is_cuda()) return std::nullopt;
#ifdef TESSERA_DEVICE_NAMES
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  const auto& a = stats.allocated_bytes[static_cast<size_t>(c10::cuda::CUDACachingAllocator::StatType::AGGREGATE)];
  return DeviceMemory{static_cast<double>(a.current) / (1 << 20), static_cast<double>(a.peak) / (1 << 20)};
#else
  return std::nullopt;
#endif
}

double device_peak_flops(at::Device device, at::ScalarType dtype) {
  if (!device.is_cuda()) return 0;
  std::string name;
#ifdef TESSERA_DEVICE_NAMES
  name = at::cuda::getDeviceProperties(device.index())->name;
#endif
  const bool half = dtype == at::kBFloat16 || dtype == at::kHalf;
  struct Peak {
    const char* name;  // a substring of the device's name
    double half, fp32;  // dense TFLOP/s, SXM parts (vendors' data sheets)
  };
  static const Peak kTable[] = {{"H200", 989.4, 66.9}, {"H100", 989.4, 66.9}, {"A100", 312.0, 19.5},
                                {"L40S", 362.1, 91.6}, {"V100", 125.0, 15.7}};
  for (const Peak& p : kTable)
    if (name.find(p.name) != std::string::npos) return 1e12 * (half ? p.half : p.fp32);
  return 0;
}

}  // namespace tessera

// tessera/core/memory_guard.hpp — a run that outgrows the machine stops with a message that
// names the figure and the key to change, instead of being OOM-killed without a word.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace tessera {

// What a machine (or the cgroup this process runs in) can hold, and what it holds now, bytes.
struct MemoryReading {
  int64_t limit = 0;    // cgroup v2 memory.max when set, else MemTotal; 0 = unknown
  int64_t used = 0;     // cgroup memory.current, else MemTotal - MemAvailable
  int64_t process = 0;  // this process's resident set (VmRSS)
};
MemoryReading read_memory();

// Watches this process from a thread, 20 times a second. When its resident memory passes
// `limit_bytes` (an explicit [train] memory_limit_mib), or when the machine is about to run out
// (used > limit - margin, margin = max(4% of the limit, 512 MiB)) while this process holds at
// least a quarter of it, it prints
//   "error: <phase>: this process holds 21.9 GiB, the machine 23.4 GiB of 24.0 GiB: it cannot
//    hold the step; <advice>"
// to stderr and exits with status 1 at once (the allocation itself would be the OOM killer's
// SIGKILL). Checkpoints and metrics already written are complete: both are written whole.
class MemoryGuard {
 public:
  MemoryGuard(int64_t limit_bytes, std::string advice);
  ~MemoryGuard();
  MemoryGuard(const MemoryGuard&) = delete;
  MemoryGuard& operator=(const MemoryGuard&) = delete;
  // What the process is doing, for the message ("training step 1", "evaluation at step 50").
  void set_phase(std::string phase);

 private:
  void watch();
  int64_t limit_bytes_;
  std::string advice_, phase_ = "before the first step";
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tessera

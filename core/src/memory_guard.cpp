// core/src/memory_guard.cpp — reads /proc and cgroup v2 memory figures and stops a run before
// the kernel's OOM killer does (see memory_guard.hpp).
#include "tessera/core/memory_guard.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace tessera {
namespace {

// "Key:   123 kB" lines of a /proc file, in bytes; -1 when absent.
int64_t proc_kb(const char* path, const std::string& key) {
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream in(line.substr(key.size() + 1));
      int64_t kb = -1;
      in >> kb;
      return kb < 0 ? -1 : kb * 1024;
    }
  return -1;
}

// A cgroup v2 file holding one number ("max" = unlimited); -1 when absent or unlimited.
int64_t cgroup_value(const std::string& name) {
  std::ifstream cg("/proc/self/cgroup");
  std::string line, rel;
  while (std::getline(cg, line))
    if (line.rfind("0::", 0) == 0) rel = line.substr(3);
  if (rel.empty()) return -1;
  std::ifstream f("/sys/fs/cgroup" + (rel == "/" ? std::string() : rel) + "/" + name);
  std::string v;
  if (!(f >> v) || v == "max") return -1;
  try {
    return std::stoll(v);
  } catch (const std::exception&) {
    return -1;
  }
}

std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1 << 30));
  return buf;
}

}  // namespace

MemoryReading read_memory() {
  MemoryReading r;
  const int64_t total = proc_kb("/proc/meminfo", "MemTotal"), available = proc_kb("/proc/meminfo", "MemAvailable");
  const int64_t cg_max = cgroup_value("memory.max");
  if (cg_max > 0 && (total < 0 || cg_max < total)) {
    r.limit = cg_max;
    r.used = std::max<int64_t>(cgroup_value("memory.current"), 0);
  } else if (total > 0) {
    r.limit = total;
    r.used = available >= 0 ? total - available : 0;
  }
  r.process = std::max<int64_t>(proc_kb("/proc/self/status", "VmRSS"), 0);
  return r;
}

MemoryGuard::MemoryGuard(int64_t limit_bytes, std::string advice)
    : limit_bytes_(limit_bytes), advice_(std::move(advice)) {
  thread_ = std::thread([this] { watch(); });
}

MemoryGuard::~MemoryGuard() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void MemoryGuard::set_phase(std::string phase) {
  std::lock_guard<std::mutex> lock(mu_);
  phase_ = std::move(phase);
}

void MemoryGuard::watch() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return stopping_; })) {
    const MemoryReading m = read_memory();
    std::string why;
    if (limit_bytes_ > 0 && m.process > limit_bytes_) {
      why = "this process holds " + gib(m.process) + ", past [train] memory_limit_mib = " +
            std::to_string(limit_bytes_ >> 20);
    } else if (limit_bytes_ == 0 && m.limit > 0) {
      const int64_t margin = std::max<int64_t>(m.limit / 25, int64_t{512} << 20);
      if (m.used > m.limit - margin && m.process >= m.limit / 4)
        why = "this process holds " + gib(m.process) + ", the machine " + gib(m.used) + " of " + gib(m.limit) +
              ": it is about to run out of memory";
    }
    if (why.empty()) continue;
    const std::string msg = "error: " + phase_ + ": " + why + "; " + advice_ + "\n";
    // No allocation can be trusted now, nor a clean unwind of the thread in the middle of the
    // step: say it and stop. The output lock and files close with the process.
    if (::write(STDERR_FILENO, msg.data(), msg.size()) < 0) {
    }
    std::fflush(stdout);
    ::_exit(1);
  }
}

}  // namespace tessera

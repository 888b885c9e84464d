// core/src/comm.cpp — c10d rendezvous (TCPStore) and ProcessGroupGloo (CPU) or
// ProcessGroupNCCL (CUDA, when LibTorch has it) behind tessera::Comm;
// every wait is bounded by the group's timeout, and a failed collective is reported with the
// rank that was lost, found from the heartbeats every rank keeps in the store.
#include "tessera/core/comm.hpp"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
// ProcessGroupGloo's header needs gloo's, which not every LibTorch distribution ships.
#if __has_include(<gloo/algorithm.h>)
#define TESSERA_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef TESSERA_HAVE_NCCL  // LibTorch with CUDA and nccl.h found (core/CMakeLists.txt)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <condition_variable>
#include <cstdio>
#include <functional>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "tessera/core/error.hpp"

namespace tessera {
namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > 1 << 20)
    throw Error(std::string("environment variable ") + name + "='" + v + "' is not a non-negative integer");
  return static_cast<int>(x);
}

}  // namespace

DistEnv DistEnv::from_env() {
  DistEnv e;
  e.world_size = env_int("WORLD_SIZE", 1);
  e.rank = env_int("RANK", 0);
  e.local_rank = env_int("LOCAL_RANK", e.rank);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 29500);
  if (e.world_size < 1) throw Error("WORLD_SIZE must be at least 1");
  if (e.rank >= e.world_size)
    throw Error("RANK=" + std::to_string(e.rank) + " is not below WORLD_SIZE=" + std::to_string(e.world_size));
  if (e.master_port < 1 || e.master_port > 65535) throw Error("MASTER_PORT=" + std::to_string(e.master_port) + " is not a port");
  return e;
}

// The process-group interface both backends implement (renamed Backend in LibTorch 2).
#if TORCH_VERSION_MAJOR >= 2
using ProcessGroupBase = c10d::Backend;
#else
using ProcessGroupBase = c10d::ProcessGroup;
#endif

struct Comm::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<ProcessGroupBase> pg;
  bool nccl = false;
  at::Device device = at::kCPU;
  // Heartbeat: a thread with its own store connection (a TCPStore client is not shared
  // across threads) sets "tessera/hb/<rank>" to a growing counter every interval.
  std::chrono::milliseconds interval{500};
  std::thread heartbeat;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  bool exit_recorded = false;
  // What the first rank to diagnose a loss published ("tessera/lost"), copied by the heartbeat
  // thread: a rank whose collective fails only after rank 0 (and the store) is gone still
  // names the rank that was lost first.
  std::string published_loss;  // guarded by mu
};

namespace {

std::string hb_key(int r) { return "tessera/hb/" + std::to_string(r); }
const std::string kLostKey = "tessera/lost";
std::string exit_key(int r) { return "tessera/exit/" + std::to_string(r); }

std::string to_string(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }
std::vector<uint8_t> to_bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// The first line of an exception's message (c10 errors append a C++ backtrace).
std::string brief(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string m = c10 ? c10->what_without_backtrace() : e.what();
  if (auto nl = m.find('\n'); nl != std::string::npos) m.resize(nl);
  return m;
}

// The rendezvous connection (rank 0 serves; every rank counts itself in and waits for all)
// or, with rendezvous=false, one more client of the same store (the heartbeat's).
c10::intrusive_ptr<c10d::TCPStore> connect_store(const DistEnv& env, bool rendezvous, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(env.master_port);
  so.isServer = rendezvous && env.rank == 0;
  so.numWorkers = env.world_size;
  so.waitWorkers = rendezvous;
  so.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
}

}  // namespace

Comm::Comm(const DistEnv& env, std::chrono::milliseconds timeout, std::chrono::milliseconds heartbeat, at::Device device)
    : env_(env), impl_(std::make_unique<Impl>()) {
  impl_->device = device;
#ifndef TESSERA_HAVE_NCCL
  if (device.is_cuda())
    throw Error("rank " + std::to_string(env.rank) + ": tensors on " + device.str() +
                " need ProcessGroupNCCL, but this build of Tessera has none (LibTorch " TORCH_VERSION
                " without CUDA, or nccl.h not found at configure time)");
#endif
#ifndef TESSERA_HAVE_GLOO
  if (!device.is_cuda())
    throw Error("rank " + std::to_string(env.rank) + ": collectives on " + device.str() +
                " need ProcessGroupGloo, and this build has none (LibTorch " TORCH_VERSION " came without gloo's headers)");
#endif
  try {
    impl_->store = connect_store(env, /*rendezvous=*/true, timeout);
#ifdef TESSERA_HAVE_NCCL
    if (device.is_cuda()) {
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, env.rank, env.world_size, opts);
      impl_->nccl = true;
    }
#endif
    if (!impl_->nccl) {
#ifdef TESSERA_HAVE_GLOO
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world_size, opts);
#endif
    }
  } catch (const std::exception& e) {
    throw Error("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                ": rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) + " failed: " + brief(e));
  }
  impl_->interval = heartbeat;
  impl_->store->set(hb_key(env.rank), to_bytes("0"));
  impl_->heartbeat = std::thread([this, timeout] {
    try {
      auto store = connect_store(env_, /*rendezvous=*/false, timeout);
      for (uint64_t beat = 1;; ++beat) {
        std::unique_lock<std::mutex> lock(impl_->mu);
        if (impl_->cv.wait_for(lock, impl_->interval, [this] { return impl_->stop; })) return;
        lock.unlock();
        store->set(hb_key(env_.rank), to_bytes(std::to_string(beat)));
        if (store->check({kLostKey})) {
          std::string loss = to_string(store->get(kLostKey));
          std::lock_guard<std::mutex> guard(impl_->mu);
          impl_->published_loss = std::move(loss);
        }
      }
    } catch (const std::exception&) {
      // The store is gone (rank 0 ended); a failing collective will report it.
    }
  });
}

bool Comm::nccl_built() {
#ifdef TESSERA_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

const char* Comm::backend() const { return impl_->nccl ? "nccl" : "gloo"; }

Comm::~Comm() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->heartbeat.joinable()) impl_->heartbeat.join();
}

void Comm::record_exit(const std::string& reason) {
  if (impl_->exit_recorded) return;
  impl_->exit_recorded = true;
  try {
    impl_->store->set(exit_key(env_.rank), to_bytes(reason.substr(0, 300)));
  } catch (const std::exception&) {
    // Without a store there is no one to tell.
  }
}

std::string Comm::diagnose_lost_ranks() {
  const std::string store_at = env_.master_addr + ":" + std::to_string(env_.master_port);
  try {
    auto read = [&](const std::string& key) -> std::string {
      return impl_->store->check({key}) ? to_string(impl_->store->get(key)) : std::string();
    };
    std::vector<std::string> before(env_.world_size);
    for (int r = 0; r < env_.world_size; ++r) before[r] = read(hb_key(r));
    // A live rank beats every interval; give each at least three chances.
    const auto window = 3 * impl_->interval + std::chrono::milliseconds(200);
    std::this_thread::sleep_for(window);
    std::vector<std::string> causes, followers;  // followers: ranks that stopped because of a cause
    for (int r = 0; r < env_.world_size; ++r) {
      if (r == env_.rank) continue;
      const std::string exit = read(exit_key(r));
      const bool silent = read(hb_key(r)) == before[r];
      if (!exit.empty()) {
        (exit.rfind("lost contact", 0) == 0 ? followers : causes).push_back("rank " + std::to_string(r) + " exited: " + exit);
      } else if (silent) {
        char line[96];
        std::snprintf(line, sizeof line, "rank %d was lost: no heartbeat for %.1f s (killed or crashed)", r,
                      std::chrono::duration<double>(window).count());
        causes.push_back(line);
      }
    }
    if (causes.empty() && followers.empty())
      return "no rank was lost (every heartbeat continues)";
    std::string out;
    for (const auto& list : {causes, followers})
      for (const auto& line : list) out += (out.empty() ? "" : "; ") + line;
    if (!causes.empty() && !impl_->store->check({kLostKey}))
      impl_->store->set(kLostKey, to_bytes("rank " + std::to_string(env_.rank) + " found: " + causes.front()));
    return out;
  } catch (const std::exception&) {
    std::lock_guard<std::mutex> guard(impl_->mu);
    if (!impl_->published_loss.empty())
      return impl_->published_loss + " (the store at " + store_at + " is gone since: rank 0 has stopped too)";
    return "rank 0, which hosts the rendezvous store at " + store_at + ", is unreachable (killed, crashed or exited)";
  }
}

void Comm::fail(const std::string& what, const std::exception& e) {
  const std::string lost = diagnose_lost_ranks();
  record_exit("lost contact during " + what);
  // Rank 0 hosts the store: it stays until every other rank has either recorded its exit
  // or stopped beating (bounded), so slower survivors can still read what happened.
  if (env_.rank == 0) {
    const auto deadline = std::chrono::steady_clock::now() + 10 * impl_->interval;
    std::vector<std::string> last(env_.world_size);
    while (std::chrono::steady_clock::now() < deadline) {
      int settled = 0;
      try {
        for (int r = 1; r < env_.world_size; ++r) {
          const std::string beat = to_string(impl_->store->get(hb_key(r)));
          if (impl_->store->check({exit_key(r)}) || beat == last[r]) ++settled;
          last[r] = beat;
        }
      } catch (const std::exception&) {
        break;
      }
      if (settled == env_.world_size - 1) break;
      std::this_thread::sleep_for(2 * impl_->interval);
    }
  }
  throw Error("rank " + std::to_string(env_.rank) + ": " + what + " failed; " + lost + " [c10d: " + brief(e) + "]");
}

namespace {
// Moving bits, not numbers: bfloat16 travels as bytes (Gloo knows no bfloat16).
at::Tensor as_bits(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 ? t.view(at::kByte) : t; }
}  // namespace

bool Comm::staged(const at::Tensor& t) const { return impl_->nccl && t.device() != impl_->device; }

void Comm::send(const at::Tensor& t, int dst, int tag) {
  if (staged(t)) return send(t.to(impl_->device), dst, tag);
  std::vector<at::Tensor> v{as_bits(t.contiguous())};
  try {
    impl_->pg->send(v, dst, tag)->wait();
  } catch (const std::exception& e) {
    fail("send to rank " + std::to_string(dst), e);
  }
}

at::Tensor& Comm::recv(at::Tensor& t, int src, int tag) {
  if (staged(t)) {
    at::Tensor d = t.to(impl_->device);
    return t.copy_(recv(d, src, tag));
  }
  std::vector<at::Tensor> v{as_bits(t)};
  try {
    impl_->pg->recv(v, src, tag)->wait();
  } catch (const std::exception& e) {
    fail("receive from rank " + std::to_string(src), e);
  }
  return t;
}

void Comm::all_reduce_sum(at::Tensor& t) {
  if (staged(t)) {  // NCCL reduces device memory only: small host values go over and back
    at::Tensor d = t.to(impl_->device);
    all_reduce_sum_async(d)->wait();
    t.copy_(d);
    return;
  }
  all_reduce_sum_async(t)->wait();
}

namespace {
// A collective in flight. Gloo cannot add bfloat16: such a tensor travels as an fp32 copy
// (summed in fp32, which is also the more accurate sum) and is written back by wait().
class WorkPending : public Comm::Pending {
 public:
  using Fail = std::function<void(const std::exception&)>;
  WorkPending(c10::intrusive_ptr<c10d::Work> w, Fail fail, at::Tensor target = {}, at::Tensor wide = {})
      : work_(std::move(w)), fail_(std::move(fail)), target_(std::move(target)), wide_(std::move(wide)) {}
  void wait() override {
    try {
      work_->wait();
    } catch (const std::exception& e) {
      fail_(e);
    }
    if (wide_.defined()) target_.copy_(wide_);
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  Fail fail_;
  at::Tensor target_, wide_;
};

}  // namespace

bool Comm::adds(const at::Tensor& t) const { return impl_->nccl || t.scalar_type() != at::kBFloat16; }

std::unique_ptr<Comm::Pending> Comm::all_reduce_sum_async(at::Tensor& t) {
  at::Tensor wide = adds(t) ? at::Tensor() : t.to(at::kFloat);
  std::vector<at::Tensor> v{wide.defined() ? wide : t};
  return std::make_unique<WorkPending>(impl_->pg->allreduce(v), [this](const std::exception& e) { fail("all-reduce", e); },
                                       t, wide);
}

std::unique_ptr<Comm::Pending> Comm::reduce_sum_async(at::Tensor& t, int root) {
  at::Tensor wide = adds(t) ? at::Tensor() : t.to(at::kFloat);
  std::vector<at::Tensor> v{wide.defined() ? wide : t};
  c10d::ReduceOptions o;
  o.rootRank = root;
  return std::make_unique<WorkPending>(
      impl_->pg->reduce(v, o), [this, root](const std::exception& e) { fail("reduce to rank " + std::to_string(root), e); },
      t, wide);
}

at::Tensor Comm::all_gather_rows(const at::Tensor& t) {
  if (staged(t)) return all_gather_rows(t.to(impl_->device)).to(t.device());
  at::Tensor in = t.contiguous();
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < env_.world_size; ++r) outputs[0].push_back(at::empty_like(in));
  std::vector<at::Tensor> inputs{as_bits(in)};
  std::vector<std::vector<at::Tensor>> bits(1);
  for (auto& o : outputs[0]) bits[0].push_back(as_bits(o));
  try {
    impl_->pg->allgather(bits, inputs)->wait();
  } catch (const std::exception& e) {
    fail("all-gather", e);
  }
  return at::cat(outputs[0], 0);
}

bool Comm::any(bool flag) {
  at::Tensor t = at::full({1}, flag ? 1 : 0, at::kInt);
  all_reduce_sum(t);
  return t.item<int>() > 0;
}

void Comm::broadcast(at::Tensor& t, int root) {
  if (staged(t)) {
    at::Tensor d = t.to(impl_->device);
    broadcast(d, root);
    t.copy_(d);
    return;
  }
  std::vector<at::Tensor> v{as_bits(t)};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  try {
    impl_->pg->broadcast(v, o)->wait();
  } catch (const std::exception& e) {
    fail("broadcast from rank " + std::to_string(root), e);
  }
}

void Comm::barrier() {
  try {
    impl_->pg->barrier()->wait();
  } catch (const std::exception& e) {
    fail("barrier", e);
  }
}

}  // namespace tessera

// core/src/comm.cpp — c10d rendezvous (TCPStore) and ProcessGroupGloo (CPU) or
// ProcessGroupNCCL (CUDA, when LibTorch has it) behind tessera::Comm;
// every wait is bounded by the group's timeout — store requests too, so a frozen store host is
// diagnosed like a dead one — and a failed collective is reported with the rank that was lost,
// found from the heartbeats every rank keeps in the store.
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

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <type_traits>

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

namespace {

using ms = std::chrono::milliseconds;

// A store call that got no answer in time: the host is frozen (SIGSTOP), hung or cut off.
struct StoreTimeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One TCPStore client connection whose every call is bounded. A TCPStore call may block for
// ever on a host that is alive but frozen (its kernel still accepts, nobody answers), so each
// runs on a helper thread and the caller waits at most `limit`. A call that does not return
// leaves the connection unusable (the helper is still inside it, holding the store alive), so
// the connection is then marked hung and later calls fail at once. Calls are serialised: a
// TCPStore client is not to be shared by threads.
class BoundedStore {
 public:
  BoundedStore() = default;
  explicit BoundedStore(c10::intrusive_ptr<c10d::Store> store) : s_(std::make_shared<Shared>()) { s_->store = std::move(store); }
  bool usable() const { return s_ && !s_->hung; }
  const c10::intrusive_ptr<c10d::Store>& raw() const { return s_->store; }

  template <class F>
  auto call(F op, ms limit) -> decltype(op(std::declval<c10d::Store&>())) {
    using T = decltype(op(std::declval<c10d::Store&>()));
    if (!s_) throw StoreTimeout("no store connection");
    if (s_->hung) throw StoreTimeout("the store connection hangs in an earlier request");
    auto result = std::make_shared<Result<T>>();
    std::thread([s = s_, result, op = std::move(op)]() mutable {
      std::lock_guard<std::mutex> serial(s->serial);
      try {
        if constexpr (std::is_void_v<T>) op(*s->store);
        else result->value = op(*s->store);
      } catch (...) {
        result->error = std::current_exception();
      }
      std::lock_guard<std::mutex> g(result->mu);
      result->done = true;
      result->cv.notify_all();
    }).detach();
    std::unique_lock<std::mutex> lock(result->mu);
    if (!result->cv.wait_for(lock, limit, [&] { return result->done; })) {
      s_->hung = true;
      char what[96];
      std::snprintf(what, sizeof what, "no answer within %.1f s", std::chrono::duration<double>(limit).count());
      throw StoreTimeout(what);
    }
    if (result->error) std::rethrow_exception(result->error);
    if constexpr (!std::is_void_v<T>) return std::move(result->value);
  }

 private:
  template <class T>
  struct Result {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::exception_ptr error;
    std::conditional_t<std::is_void_v<T>, char, T> value{};
  };
  struct Shared {
    c10::intrusive_ptr<c10d::Store> store;
    std::mutex serial;
    std::atomic<bool> hung{false};
  };
  std::shared_ptr<Shared> s_;
};

// Runs `make` (a constructor that talks to the store) on a helper thread, waiting at most `limit`.
template <class F>
auto bounded(F make, ms limit) {
  using T = decltype(make());
  struct Result {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::exception_ptr error;
    T value;
  };
  auto r = std::make_shared<Result>();
  std::thread([r, make = std::move(make)]() mutable {
    T v;
    std::exception_ptr e;
    try {
      v = make();
    } catch (...) {
      e = std::current_exception();
    }
    std::lock_guard<std::mutex> g(r->mu);
    r->value = std::move(v);
    r->error = e;
    r->done = true;
    r->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(r->mu);
  if (!r->cv.wait_for(lock, limit, [&] { return r->done; })) {
    char what[96];
    std::snprintf(what, sizeof what, "no answer within %.1f s", std::chrono::duration<double>(limit).count());
    throw StoreTimeout(what);
  }
  if (r->error) std::rethrow_exception(r->error);
  return std::move(r->value);
}

}  // namespace

struct Comm::Impl {
  BoundedStore store;  // the rendezvous connection (ProcessGroupGloo's too)
  c10::intrusive_ptr<ProcessGroupBase> pg;
  bool nccl = false;
  at::Device device = at::kCPU;
  std::chrono::milliseconds timeout{60000};
  // How long one store request on a failure path may take before its host counts as frozen:
  // a live store answers in milliseconds, and the diagnosis must end well within timeout_s.
  std::chrono::milliseconds store_limit{3000};
  // Heartbeat: a thread with its own store connection (a TCPStore client is not shared
  // across threads) sets "tessera/hb/<rank>" to a growing counter every interval. Its state is
  // shared with it, so a heartbeat stuck in a frozen store can be left behind at exit.
  struct Beat {
    std::mutex mu;
    std::condition_variable cv;
    bool stop = false;
    bool finished = false;
    // What the first rank to diagnose a loss published ("tessera/lost"): a rank whose
    // collective fails only after rank 0 (and the store) is gone still names the rank lost first.
    std::string published_loss;
  };
  std::shared_ptr<Beat> beat = std::make_shared<Beat>();
  std::chrono::milliseconds interval{500};
  std::thread heartbeat;
  bool exit_recorded = false;
  bool lingered = false;
};

namespace {

std::string hb_key(int r) { return "tessera/hb/" + std::to_string(r); }
std::string join_key(int r) { return "tessera/join/" + std::to_string(r); }
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

std::string seconds(std::chrono::milliseconds d) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f s", std::chrono::duration<double>(d).count());
  return s;
}

// A connection to the store (rank 0 serves it when `serve`). Rendezvous is ours (join keys),
// so the constructor never waits for the other workers; a client retries until `timeout`.
c10::intrusive_ptr<c10d::Store> connect_store(const DistEnv& env, bool serve, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(env.master_port);
  so.isServer = serve;
  so.numWorkers = env.world_size;
  so.waitWorkers = false;
  so.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
}

std::string read_key(BoundedStore& store, const std::string& key, ms limit) {
  return store.call(
      [key](c10d::Store& s) { return s.check({key}) ? to_string(s.get(key)) : std::string(); }, limit);
}

void write_key(BoundedStore& store, const std::string& key, const std::string& value, ms limit) {
  store.call([key, value](c10d::Store& s) { s.set(key, to_bytes(value)); }, limit);
}

std::string list_ranks(const std::vector<int>& ranks) {
  std::string out = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) out += (i ? ", " : "") + std::to_string(ranks[i]);
  return out;
}

}  // namespace

Comm::Comm(const DistEnv& env, std::chrono::milliseconds timeout, std::chrono::milliseconds heartbeat, at::Device device)
    : env_(env), impl_(std::make_unique<Impl>()) {
  impl_->device = device;
  impl_->timeout = timeout;
  impl_->interval = heartbeat;
  impl_->store_limit = std::clamp(timeout / 2, ms(1000), ms(5000));
  const std::string me = "rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size);
  const std::string store_at = env.master_addr + ":" + std::to_string(env.master_port);
  const auto deadline = std::chrono::steady_clock::now() + timeout;

  // 1. The store: rank 0 serves it, the others connect (retrying until the timeout).
  try {
    impl_->store = BoundedStore(bounded([env, timeout] { return connect_store(env, env.rank == 0, timeout); }, timeout + ms(2000)));
  } catch (const std::exception& e) {
    if (env.rank == 0) throw Error(me + ": cannot serve the rendezvous store at " + store_at + ": " + brief(e));
    throw Error(me + ": rank 0, which hosts the rendezvous store at " + store_at + ", is unreachable: not up within " +
                seconds(timeout) + " (not started, frozen, or another address/port) [c10d: " + brief(e) + "]");
  }
  // From here on, a rank that stops on its own error tells the others why.
  auto stop_on = [&](const std::string& why) {
    record_exit("stopped during setup: " + why);
    throw Error(why);
  };
#ifndef TESSERA_HAVE_NCCL
  if (device.is_cuda())
    stop_on("rank " + std::to_string(env.rank) + ": tensors on " + device.str() +
            " need ProcessGroupNCCL, but this build of Tessera has none (LibTorch " TORCH_VERSION
            " without CUDA, or nccl.h not found at configure time)");
#endif
#ifndef TESSERA_HAVE_GLOO
  if (!device.is_cuda())
    stop_on("rank " + std::to_string(env.rank) + ": collectives on " + device.str() +
            " need ProcessGroupGloo, and this build has none (LibTorch " TORCH_VERSION " came without gloo's headers)");
#endif

  // 2. Join: every rank announces itself and waits for all, so a rank that never comes is
  // named, and one that stopped on an error is reported with it.
  const auto frozen_host = [&](const std::exception& e) {
    return Error(me + ": rank 0, which hosts the rendezvous store at " + store_at + ", is frozen or unreachable (" +
                 brief(e) + "; stopped, hung or gone)");
  };
  try {
    write_key(impl_->store, hb_key(env.rank), "0", impl_->store_limit);
    write_key(impl_->store, join_key(env.rank), "1", impl_->store_limit);
    std::vector<bool> joined(env.world_size, false);
    for (;;) {
      std::vector<int> missing;
      for (int r = 0; r < env.world_size; ++r) {
        if (joined[r]) continue;
        if (const std::string why = read_key(impl_->store, exit_key(r), impl_->store_limit); !why.empty())
          throw Error(me + ": rank " + std::to_string(r) + " " + why);
        joined[r] = !read_key(impl_->store, join_key(r), impl_->store_limit).empty();
        if (!joined[r]) missing.push_back(r);
      }
      if (missing.empty()) break;
      if (std::chrono::steady_clock::now() > deadline)
        throw Error(me + ": " + list_ranks(missing) + " did not join within " +
                    seconds(timeout) + " (not started, or stopped before reaching the store at " + store_at + ")");
      std::this_thread::sleep_for(ms(50));
    }
  } catch (const StoreTimeout& e) {
    throw frozen_host(e);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(me + ": rank 0, which hosts the rendezvous store at " + store_at +
                ", is unreachable (killed, crashed or exited) [c10d: " + brief(e) + "]");
  }

  // 3. The process group (its own rendezvous through the store, bounded like the rest).
  try {
    auto store = impl_->store.raw();
    const auto make_pg = [store, env, device, timeout]() -> c10::intrusive_ptr<ProcessGroupBase> {
#ifdef TESSERA_HAVE_NCCL
      if (device.is_cuda()) {
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = timeout;
        return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, opts);
      }
#endif
#ifdef TESSERA_HAVE_GLOO
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
      return c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank, env.world_size, opts);
#else
      return {};
#endif
    };
    impl_->pg = impl_->store.call([make_pg](c10d::Store&) { return make_pg(); }, timeout + ms(5000));
    impl_->nccl = device.is_cuda();
  } catch (const std::exception& e) {
    record_exit("stopped during setup: process group rendezvous failed: " + brief(e));
    throw Error(me + ": rendezvous at " + store_at + " failed; " + diagnose_lost_ranks() + " [c10d: " + brief(e) + "]");
  }

  // 4. The heartbeat, on its own connection.
  std::shared_ptr<Impl::Beat> beat = impl_->beat;
  impl_->heartbeat = std::thread([env = env_, beat, timeout, interval = impl_->interval] {
    try {
      BoundedStore store(bounded([env, timeout] { return connect_store(env, false, timeout); }, timeout + ms(2000)));
      for (uint64_t n = 1;; ++n) {
        {
          std::unique_lock<std::mutex> lock(beat->mu);
          if (beat->cv.wait_for(lock, interval, [&] { return beat->stop; })) break;
        }
        write_key(store, hb_key(env.rank), std::to_string(n), timeout);
        std::string loss = read_key(store, kLostKey, timeout);
        if (!loss.empty()) {
          std::lock_guard<std::mutex> guard(beat->mu);
          beat->published_loss = std::move(loss);
        }
      }
    } catch (const std::exception&) {
      // The store is gone or frozen; a failing collective will report it.
    }
    std::lock_guard<std::mutex> guard(beat->mu);
    beat->finished = true;
    beat->cv.notify_all();
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
  // Unwinding from an error this rank raised itself (during setup, say): tell the peers, and
  // as the store's host close the group first, so theirs fail now and can still read why.
  if (std::uncaught_exceptions() > 0 && impl_->store.usable()) {
    record_exit("stopped on its own error (its log has the message)");
    if (env_.rank == 0 && !impl_->lingered) {
      impl_->pg.reset();
      linger_for_peers();
    }
  }
  {
    std::lock_guard<std::mutex> lock(impl_->beat->mu);
    impl_->beat->stop = true;
  }
  impl_->beat->cv.notify_all();
  if (!impl_->heartbeat.joinable()) return;
  // A heartbeat stuck in a frozen store's request is left behind (it owns what it uses).
  std::unique_lock<std::mutex> lock(impl_->beat->mu);
  const bool done = impl_->beat->cv.wait_for(lock, impl_->interval + ms(1000), [&] { return impl_->beat->finished; });
  lock.unlock();
  if (done) impl_->heartbeat.join();
  else impl_->heartbeat.detach();
}

void Comm::record_exit(const std::string& reason) {
  if (impl_->exit_recorded) return;
  impl_->exit_recorded = true;
  try {
    write_key(impl_->store, exit_key(env_.rank), reason.substr(0, 300), impl_->store_limit);
  } catch (const std::exception&) {
    // Without a store there is no one to tell.
  }
}

std::string Comm::diagnose_lost_ranks() {
  const std::string store_at = env_.master_addr + ":" + std::to_string(env_.master_port);
  const ms limit = impl_->store_limit;
  try {
    auto read = [&](const std::string& key) { return read_key(impl_->store, key, limit); };
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
        char line[112];
        std::snprintf(line, sizeof line, "rank %d was lost: no heartbeat for %.1f s (killed, crashed or frozen)", r,
                      std::chrono::duration<double>(window).count());
        causes.push_back(line);
      }
    }
    if (causes.empty() && followers.empty())
      return "no rank was lost (every heartbeat continues)";
    std::string out;
    for (const auto& list : {causes, followers})
      for (const auto& line : list) out += (out.empty() ? "" : "; ") + line;
    if (!causes.empty() && read(kLostKey).empty())
      write_key(impl_->store, kLostKey, "rank " + std::to_string(env_.rank) + " found: " + causes.front(), limit);
    return out;
  } catch (const StoreTimeout& e) {
    return "rank 0, which hosts the rendezvous store at " + store_at + ", is frozen or unreachable (" + e.what() +
           "; stopped, hung or its host is down)";
  } catch (const std::exception&) {
    std::lock_guard<std::mutex> guard(impl_->beat->mu);
    if (!impl_->beat->published_loss.empty())
      return impl_->beat->published_loss + " (the store at " + store_at + " is gone since: rank 0 has stopped too)";
    return "rank 0, which hosts the rendezvous store at " + store_at + ", is unreachable (killed, crashed or exited)";
  }
}

// Rank 0 hosts the store: it stays until every other rank has either recorded its exit or
// stopped beating (bounded), so slower survivors can still read what happened.
void Comm::linger_for_peers() {
  impl_->lingered = true;
  const auto deadline = std::chrono::steady_clock::now() + 10 * impl_->interval;
  std::vector<std::string> last(env_.world_size);
  while (std::chrono::steady_clock::now() < deadline) {
    int settled = 0;
    try {
      for (int r = 1; r < env_.world_size; ++r) {
        const std::string beat = read_key(impl_->store, hb_key(r), impl_->store_limit);
        if (!read_key(impl_->store, exit_key(r), impl_->store_limit).empty() || beat == last[r]) ++settled;
        last[r] = beat;
      }
    } catch (const std::exception&) {
      break;
    }
    if (settled == env_.world_size - 1) break;
    std::this_thread::sleep_for(2 * impl_->interval);
  }
}

void Comm::fail(const std::string& what, const std::exception& e) {
  const std::string lost = diagnose_lost_ranks();
  record_exit("lost contact during " + what);
  if (env_.rank == 0) linger_for_peers();
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

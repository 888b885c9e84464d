// core/src/comm.cpp — c10d rendezvous (TCPStore) and ProcessGroupGloo behind tessera::Comm;
// every wait is bounded by the group's timeout and errors name the peer rank.
#include "tessera/core/comm.hpp"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>

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

struct Comm::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

Comm::Comm(const DistEnv& env, std::chrono::milliseconds timeout) : env_(env), impl_(std::make_unique<Impl>()) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(env.master_port);
  so.isServer = env.rank == 0;
  so.numWorkers = env.world_size;
  so.waitWorkers = true;
  so.timeout = timeout;
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world_size, opts);
  } catch (const std::exception& e) {
    throw Error("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                ": rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) + " failed: " + e.what());
  }
}

Comm::~Comm() = default;

void Comm::send(const at::Tensor& t, int dst, int tag) {
  std::vector<at::Tensor> v{t.contiguous()};
  try {
    impl_->pg->send(v, dst, tag)->wait();
  } catch (const std::exception& e) {
    throw Error("rank " + std::to_string(env_.rank) + ": send to rank " + std::to_string(dst) + " failed: " + e.what());
  }
}

at::Tensor& Comm::recv(at::Tensor& t, int src, int tag) {
  std::vector<at::Tensor> v{t};
  try {
    impl_->pg->recv(v, src, tag)->wait();
  } catch (const std::exception& e) {
    throw Error("rank " + std::to_string(env_.rank) + ": receive from rank " + std::to_string(src) + " failed: " + e.what());
  }
  return t;
}

void Comm::all_reduce_sum(at::Tensor& t) { all_reduce_sum_async(t)->wait(); }

namespace {
class GlooPending : public Comm::Pending {
 public:
  GlooPending(c10::intrusive_ptr<c10d::Work> w, int rank) : work_(std::move(w)), rank_(rank) {}
  void wait() override {
    try {
      work_->wait();
    } catch (const std::exception& e) {
      throw Error("rank " + std::to_string(rank_) + ": gradient all-reduce failed (a peer rank died or timed out): " +
                  e.what());
    }
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  int rank_;
};
}  // namespace

std::unique_ptr<Comm::Pending> Comm::all_reduce_sum_async(at::Tensor& t) {
  std::vector<at::Tensor> v{t};
  return std::make_unique<GlooPending>(impl_->pg->allreduce(v), env_.rank);
}

bool Comm::any(bool flag) {
  at::Tensor t = at::full({1}, flag ? 1 : 0, at::kInt);
  all_reduce_sum(t);
  return t.item<int>() > 0;
}

void Comm::broadcast(at::Tensor& t, int root) {
  std::vector<at::Tensor> v{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  impl_->pg->broadcast(v, o)->wait();
}

void Comm::barrier() { impl_->pg->barrier()->wait(); }

}  // namespace tessera

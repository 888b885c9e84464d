// tessera/core/comm.hpp — communication between ranks over libtorch's c10d: rendezvous
// through a TCPStore from torchrun's variables, ProcessGroupGloo on CPU, ProcessGroupNCCL on
// CUDA. No home-made transport.
// Every rank also beats a heartbeat into the store, so when a collective fails the survivors
// name the rank that was lost — whoever launched them (torchrun, a scheduler, tessera launch).
#pragma once
#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>

namespace tessera {

// Where this process stands, from RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
// (what torchrun and `tessera launch` set). Defaults: a single process.
struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // Throws Error naming the variable when one is set but malformed or inconsistent.
  static DistEnv from_env();
};

class Comm {
 public:
  // Rendezvous (rank 0 hosts the TCPStore) and a Gloo process group. `timeout` bounds every
  // collective and the rendezvous itself: a rank that never shows up is named ("rank 1 did not
  // join within 5.0 s"), one that stopped on an error in setup is reported with it, and a store
  // host that answers nothing (frozen) is an error like a dead one, not a hang.
  // `heartbeat` is how often this rank proves it is alive (a background thread).
  // `device` picks the backend: CPU -> ProcessGroupGloo, CUDA -> ProcessGroupNCCL (an Error
  // in a build without it). Host tensors given to a NCCL group travel via the device.
  Comm(const DistEnv& env, std::chrono::milliseconds timeout = std::chrono::seconds(60),
       std::chrono::milliseconds heartbeat = std::chrono::milliseconds(500), at::Device device = at::kCPU);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  // Whether this build has ProcessGroupNCCL (LibTorch with CUDA and nccl.h at configure time).
  static bool nccl_built();
  const char* backend() const;  // "gloo" or "nccl"

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }

  // Point to point. recv fills `t` (shape and dtype agreed beforehand) and returns it.
  void send(const at::Tensor& t, int dst, int tag);
  at::Tensor& recv(at::Tensor& t, int src, int tag);
  void all_reduce_sum(at::Tensor& t);
  // Starts a sum all-reduce in the background (Gloo's threads); wait() before reading `t`.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  std::unique_ptr<Pending> all_reduce_sum_async(at::Tensor& t);
  // Starts a sum reduce onto `root` (ZeRO-2: a gradient range to the rank that owns it);
  // after wait() only the root's `t` holds the sum, the others' contents are unspecified.
  std::unique_ptr<Pending> reduce_sum_async(at::Tensor& t, int root);
  // Every rank's `t` (same shape everywhere) stacked along dim 0 in rank order.
  at::Tensor all_gather_rows(const at::Tensor& t);
  // Logical OR / MAX of a flag over all ranks.
  bool any(bool flag);
  void broadcast(at::Tensor& t, int root);
  void barrier();

  // This rank is about to stop with `reason` (an error it raised itself): recorded in the
  // store, so peers whose collectives then fail report it instead of guessing.
  void record_exit(const std::string& reason);

  // After a failed collective: which ranks are gone? Watches the heartbeats for a few
  // intervals and returns e.g. "rank 2 stopped (no heartbeat for 1.5 s)", "rank 1 exited:
  // <its error>", or "rank 0, which hosts the store at host:port, is unreachable".
  std::string diagnose_lost_ranks();

 private:
  [[noreturn]] void fail(const std::string& what, const std::exception& e);
  void linger_for_peers();  // rank 0, stopping: keep the store up until the peers have read it
  bool staged(const at::Tensor& t) const;  // must go to the group's device first (NCCL)
  bool adds(const at::Tensor& t) const;    // the backend can sum this dtype itself
  struct Impl;
  DistEnv env_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera

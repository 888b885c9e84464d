// tessera/core/launch.hpp — `tessera launch --nproc N [--nnodes M --node-rank K] -- <args>`:
// starts this node's N ranks with torchrun's variables, forwards SIGINT/SIGTERM, and stops
// all when one fails (a stopped, i.e. frozen, rank is killed at once).
#pragma once
#include <string>
#include <vector>

namespace tessera {

struct LaunchOptions {
  int nproc = 1;                // ranks on this node (LOCAL_WORLD_SIZE)
  int nnodes = 1;               // WORLD_SIZE = nnodes * nproc
  int node_rank = 0;            // RANK = node_rank * nproc + LOCAL_RANK
  int master_port = 0;          // 0: pick a free port (one node only)
  std::string master_addr = "127.0.0.1";
  double grace_s = 10.0;        // after a failure: SIGTERM, then SIGKILL after this long
  std::string exe;              // the program every rank runs
  std::vector<std::string> args;  // its arguments (e.g. train CONFIG --set ...)
};

// Throws Error for options out of range (the CLI checks them first, naming the flag).
// Returns 0 when every rank exited 0; otherwise the first failing rank's status (128+signal
// for a signal), after printing which rank failed and how.
int launch_ranks(const LaunchOptions& opt);

}  // namespace tessera

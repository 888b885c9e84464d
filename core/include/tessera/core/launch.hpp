// tessera/core/launch.hpp — `tessera launch --nproc N -- <args>`: starts N local ranks with
// torchrun's variables, forwards SIGINT/SIGTERM, and stops all when one fails.
#pragma once
#include <string>
#include <vector>

namespace tessera {

struct LaunchOptions {
  int nproc = 1;
  int master_port = 0;          // 0: pick a free port
  std::string master_addr = "127.0.0.1";
  double grace_s = 10.0;        // after a failure: SIGTERM, then SIGKILL after this long
  std::string exe;              // the program every rank runs
  std::vector<std::string> args;  // its arguments (e.g. train CONFIG --set ...)
};

// Returns 0 when every rank exited 0; otherwise the first failing rank's status (128+signal
// for a signal), after printing which rank failed and how.
int launch_ranks(const LaunchOptions& opt);

}  // namespace tessera

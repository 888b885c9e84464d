// core/src/launch.cpp — a node's launcher: one child process per local rank with RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; the first failure stops
// the rest (SIGTERM, SIGKILL after the grace time, at once for a stopped child); signals forwarded.
#include "tessera/core/launch.hpp"

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <thread>

#include "tessera/core/error.hpp"

extern char** environ;

namespace tessera {
namespace {

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) throw Error("launch: cannot find a free port");
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
                                  strsignal(WTERMSIG(status)) + ")";
  return "ended abnormally";
}

}  // namespace

int launch_ranks(const LaunchOptions& opt) {
  if (opt.nproc < 1) throw Error("launch: --nproc must be at least 1");
  if (opt.nnodes < 1 || opt.node_rank < 0 || opt.node_rank >= opt.nnodes)
    throw Error("launch: --node-rank must be in 0.." + std::to_string(opt.nnodes - 1) + " and --nnodes at least 1");
  if (opt.master_port < 0 || opt.master_port > 65535) throw Error("launch: --master-port must be in 1..65535");
  if (opt.nnodes > 1 && opt.master_port == 0)
    throw Error("launch: --master-port is required with --nnodes > 1 (every node must name the same one)");
  const int port = opt.master_port > 0 ? opt.master_port : free_port();
  const int world = opt.nnodes * opt.nproc, first_rank = opt.node_rank * opt.nproc;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::vector<pid_t> pids(opt.nproc, 0);
  for (int r = 0; r < opt.nproc; ++r) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      std::string kv = *e;
      const std::string k = kv.substr(0, kv.find('='));
      if (k != "RANK" && k != "WORLD_SIZE" && k != "LOCAL_RANK" && k != "LOCAL_WORLD_SIZE" && k != "MASTER_ADDR" &&
          k != "MASTER_PORT")
        env.push_back(kv);
    }
    env.push_back("RANK=" + std::to_string(first_rank + r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(world));
    env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(opt.nproc));
    env.push_back("MASTER_ADDR=" + opt.master_addr);
    env.push_back("MASTER_PORT=" + std::to_string(port));
    std::vector<char*> envp, argv;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> args{opt.exe};
    args.insert(args.end(), opt.args.begin(), opt.args.end());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (int rc = posix_spawn(&pids[r], opt.exe.c_str(), nullptr, nullptr, argv.data(), envp.data()); rc != 0) {
      for (pid_t p : pids)  // the ranks already started cannot rendezvous without this one
        if (p > 0) ::kill(p, SIGKILL), ::waitpid(p, nullptr, 0);
      throw Error("launch: cannot start rank " + std::to_string(first_rank + r) + " (" + opt.exe + "): " + std::strerror(rc));
    }
  }
  if (opt.nnodes == 1)
    std::cerr << "launch: " << opt.nproc << " ranks on " << opt.master_addr << ":" << port << "\n";
  else
    std::cerr << "launch: node " << opt.node_rank << " of " << opt.nnodes << ", ranks " << first_rank << ".."
              << first_rank + opt.nproc - 1 << " of " << world << ", store at " << opt.master_addr << ":" << port << "\n";

  int result = 0, alive = opt.nproc;
  bool stopping = false;
  std::vector<bool> stopped(opt.nproc, false);  // by SIGSTOP & co. (frozen): SIGTERM would stay pending
  auto stop_all = [&](int sig) {
    for (int r = 0; r < opt.nproc; ++r) {
      if (pids[r] <= 0) continue;
      if (stopped[r] && sig != SIGKILL) {
        std::cerr << "launch: rank " << first_rank + r << " (pid " << pids[r] << ") is stopped (frozen); killing it\n";
        ::kill(pids[r], SIGKILL);
      } else {
        ::kill(pids[r], sig);
      }
    }
  };
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (alive > 0) {
    if (g_signal && !stopping) {  // forward Ctrl-C / SIGTERM to every rank
      std::cerr << "launch: got signal " << g_signal << "; stopping all ranks\n";
      stop_all(g_signal);
      stopping = true;
      result = 128 + g_signal;
      deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opt.grace_s * 1000));
    }
    int status = 0;
    pid_t done = ::waitpid(-1, &status, WNOHANG | WUNTRACED | WCONTINUED);
    if (done > 0) {
      int rank = -1;
      for (int r = 0; r < opt.nproc; ++r)
        if (pids[r] == done) rank = r;
      if (rank < 0) continue;
      if (WIFSTOPPED(status) || WIFCONTINUED(status)) {
        stopped[rank] = WIFSTOPPED(status);
        if (stopped[rank] && stopping) ::kill(done, SIGKILL);  // asked to end, it can no longer act on it
        continue;
      }
      pids[rank] = 0;
      --alive;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!ok && !stopping) {
        std::cerr << "launch: rank " << first_rank + rank << " (pid " << done << ") " << describe(status)
                  << "; stopping the other ranks\n";
        result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        stop_all(SIGTERM);
        stopping = true;
        deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opt.grace_s * 1000));
      }
      continue;
    }
    if (stopping && std::chrono::steady_clock::now() > deadline) {
      stop_all(SIGKILL);
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return result;
}

}  // namespace tessera

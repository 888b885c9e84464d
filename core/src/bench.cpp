// core/src/bench.cpp — runs `tessera train` once per backend as a child process, reads its
// metrics.jsonl and log, and measures the child's peak RSS with wait4's rusage.
#include "tessera/core/bench.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tessera/core/error.hpp"

extern char** environ;
namespace fs = std::filesystem;

namespace tessera {
namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Runs argv with stdout+stderr to `log`; returns the exit status and fills peak RSS (MiB).
int run_child(const std::vector<std::string>& args, const std::string& log, double& peak_mib) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw Error("bench: cannot start " + args[0] + ": " + std::strerror(rc));
  int status = 0;
  rusage ru{};
  if (wait4(pid, &status, 0, &ru) < 0) throw Error("bench: wait for " + args[0] + " failed");
  peak_mib = static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

std::vector<BenchRow> run_bench(const BenchOptions& opt) {
  std::vector<BenchRow> rows;
  fs::create_directories(opt.out_dir);
  for (const auto& backend : opt.backends) {
    BenchRow row;
    row.backend = backend;
    const std::string dir = opt.out_dir + "/" + backend;
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::vector<std::string> args{opt.self_exe, "train", opt.config, "--set", "precision.plugin=\"" + backend + "\"",
                                  "--set", "experiment.output_dir=\"" + dir + "\"",
                                  // DIR/<backend> is the bench's own: a rerun replaces it.
                                  "--set", "experiment.on_existing=\"overwrite\""};
    for (const auto& s : opt.sets) args.insert(args.end(), {"--set", s});
    const std::string log = dir + "/train.log";
    const int code = run_child(args, log, row.peak_rss_mib);
    std::ifstream lf(log);
    std::string line;
    while (std::getline(lf, line))
      if (row.error.empty() && line.rfind("error: ", 0) == 0) row.error = line.substr(7);
    row.ok = code == 0;
    if (!row.ok && row.error.empty()) row.error = "exit status " + std::to_string(code);
    std::ifstream mf(dir + "/metrics.jsonl");
    std::vector<double> step_ms, sps;
    double prev_elapsed = 0;
    int64_t prev_step = 0;
    bool first = true;
    while (row.ok && std::getline(mf, line)) {
      auto r = nlohmann::json::parse(line);
      if (r.value("header", false)) {  // what the run is: its model-state bytes per parameter
        if (r.contains("bytes_per_param") && r["bytes_per_param"].contains("total"))
          row.bytes_per_param = r["bytes_per_param"]["total"];
        continue;
      }
      if (r.contains("eval")) {
        if (r.contains("eval_accuracy")) row.eval_accuracy = r["eval_accuracy"];
        if (r.contains("eval_loss") && !r.contains("eval_accuracy")) row.eval_loss = r["eval_loss"];
        prev_elapsed = r["elapsed_s"];  // evaluation time is not step time
        continue;
      }
      const double elapsed = r["elapsed_s"];
      const int64_t step = r["step"];
      if (!first && step > prev_step) {  // the first window includes warm-up
        step_ms.push_back(1000.0 * (elapsed - prev_elapsed) / static_cast<double>(step - prev_step));
        sps.push_back(r["samples_per_s"]);
      }
      first = false;
      prev_elapsed = elapsed;
      prev_step = step;
      row.final_loss = r["loss"];
      row.train_seconds = elapsed;
    }
    row.step_ms = median(step_ms);
    row.samples_per_s = median(sps);
    rows.push_back(row);
  }
  return rows;
}

std::string bench_table(const std::vector<BenchRow>& rows) {
  std::ostringstream o;
  o << std::left << std::setw(16) << "backend" << std::right << std::setw(10) << "step ms" << std::setw(11)
    << "samples/s" << std::setw(12) << "bytes/param" << std::setw(14) << "peak RSS MiB" << std::setw(12)
    << "final loss" << std::setw(11) << "eval acc" << std::setw(11) << "eval loss" << "\n";
  o << std::fixed;
  for (const auto& r : rows) {
    o << std::left << std::setw(16) << r.backend << std::right;
    if (!r.ok) {
      o << "  failed: " << r.error << "\n";
      continue;
    }
    o << std::setw(10) << std::setprecision(1) << r.step_ms << std::setw(11) << std::setprecision(0) << r.samples_per_s
      << std::setw(12) << std::setprecision(2) << r.bytes_per_param << std::setw(14) << std::setprecision(0)
      << r.peak_rss_mib << std::setw(12) << std::setprecision(4) << r.final_loss;
    // A figure the run does not have (no classifier, no [eval] loss) is a dash.
    std::ostringstream acc, loss;
    acc << std::fixed << std::setprecision(2) << 100 * r.eval_accuracy << "%";
    loss << std::fixed << std::setprecision(4) << r.eval_loss;
    o << std::setw(11) << (r.eval_accuracy >= 0 ? acc.str() : "-") << std::setw(11) << (r.eval_loss >= 0 ? loss.str() : "-")
      << "\n";
  }
  return o.str();
}

std::string bench_json(const BenchOptions& opt, const std::vector<BenchRow>& rows) {
  nlohmann::ordered_json j;
  j["config"] = opt.config;
  j["sets"] = opt.sets;
  for (const auto& r : rows) {
    nlohmann::ordered_json x = {{"backend", r.backend}, {"ok", r.ok}};
    if (r.ok) {
      x["step_ms"] = r.step_ms;
      x["samples_per_s"] = r.samples_per_s;
      x["bytes_per_param"] = r.bytes_per_param;
      x["peak_rss_mib"] = r.peak_rss_mib;
      x["final_loss"] = r.final_loss;
      x["eval_accuracy"] = r.eval_accuracy;
      x["eval_loss"] = r.eval_loss;
      x["train_seconds"] = r.train_seconds;
    } else {
      x["error"] = r.error;
    }
    j["runs"].push_back(x);
  }
  return j.dump(2) + "\n";
}

}  // namespace tessera

// tools/tessera/data_speak.cpp — `tessera data speak`: Fashion-MNIST's class captions spoken by
// Debian's espeak-ng into a cache directory (one WAV a clip plus manifest.tsv), once, offline; the
// fashion_mnist plugin reads them with spoken_captions = "<dir>". Same plan, same files: the plan
// is fixed by the captions and spoken.cpp, and espeak-ng is deterministic.
#include "data_speak.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iomanip>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "captions.hpp"
#include "tool_cli.hpp"
#include "spoken.hpp"

extern char** environ;

namespace tessera::tools {
namespace {

namespace fs = std::filesystem;
namespace fm = tessera::fashion_mnist;

constexpr const char* kSpeakAbout = R"(Speaks Fashion-MNIST's class captions (WordNet, as the fashion_mnist dataset builds them) with
espeak-ng into DIR: each class's first N training captions (default 12) in 8 training voices,
and its held-out captions (default 3, as [data] heldout_captions) in 3 held-out voices whose
accents and variants no training voice has; speed and pitch vary per clip, deterministically.
Writes DIR/c<class>/<set>_<n>.wav (espeak-ng's 22050 Hz mono) and DIR/manifest.tsv, into a
temporary directory renamed into place at the end: an interrupted run leaves DIR as it was. A
DIR whose manifest and files already match is left alone.)";

struct SpeakOptions {
  std::string out, wordnet = fm::kWordNetDefaultDir, espeak = "espeak-ng";
  int64_t per_class = 12, heldout = 3, jobs = 0;
};

int64_t count_arg(const std::string& flag, const std::string& v, int64_t lo, int64_t hi) {
  size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || n < lo || n > hi)
    throw std::invalid_argument(flag + " takes a whole number in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                "], got '" + v.substr(0, 32) + "'");
  return n;
}

std::string default_cache() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return (fs::path(x) / "tessera" / "fashion_spoken").string();
  if (const char* h = std::getenv("HOME"); h && *h) return (fs::path(h) / ".cache" / "tessera" / "fashion_spoken").string();
  throw std::invalid_argument("neither XDG_CACHE_HOME nor HOME is set: pass --out DIR");
}

// false: help was asked for (and printed). Throws std::invalid_argument for bad usage.
bool parse(const std::vector<std::string>& args, SpeakOptions& o) {
  CLI::App app{kSpeakAbout, "tessera data speak"};
  std::string per_class = "12", heldout = "3", jobs;
  app.add_option("--out", o.out,
                 "the cache (default $XDG_CACHE_HOME/tessera/fashion_spoken, else ~/.cache/tessera/fashion_spoken: "
                 "what configs/fashion_trimodal.toml reads)")
      ->type_name("DIR");
  app.add_option("--wordnet", o.wordnet, "WordNet 3.0 database (default /usr/share/wordnet, Debian's wordnet-base)")
      ->type_name("DIR");
  app.add_option("--per-class", per_class, "training captions spoken per class (default 12)")->type_name("N");
  app.add_option("--heldout", heldout,
                 "held-out captions per class (default 3; must match [data] heldout_captions or be fewer)")
      ->type_name("N");
  app.add_option("--espeak", o.espeak, "the espeak-ng program (default espeak-ng, Debian's espeak-ng)")
      ->type_name("PROG");
  app.add_option("--jobs", jobs, "espeak-ng processes at once (default: the number of cores)")->type_name("N");
  if (!parse_tool_args(app, args)) return false;
  o.per_class = count_arg("--per-class", per_class, 1, 1000);
  o.heldout = count_arg("--heldout", heldout, 1, 16);
  o.jobs = jobs.empty() ? 0 : count_arg("--jobs", jobs, 1, 256);
  if (o.out.empty()) o.out = default_cache();
  if (o.jobs == 0) o.jobs = std::max<int64_t>(1, sysconf(_SC_NPROCESSORS_ONLN));
  return true;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool up_to_date(const fs::path& dir, const std::string& manifest, const std::vector<fm::SpokenClip>& plan) {
  std::error_code ec;
  if (!fs::is_regular_file(dir / "manifest.tsv", ec) || read_all(dir / "manifest.tsv") != manifest) return false;
  for (const auto& c : plan)
    if (fs::file_size(dir / c.file, ec) <= 44 || ec) return false;  // a WAV header alone is no clip
  return true;
}

struct Running {
  pid_t pid;
  const fm::SpokenClip* clip;
};

pid_t spawn_espeak(const SpeakOptions& o, const fm::SpokenClip& c, const fs::path& file) {
  std::vector<std::string> argv{o.espeak, "-v", c.voice, "-s", std::to_string(c.speed), "-p", std::to_string(c.pitch),
                                "-w", file.string(), "--", c.text};
  std::vector<char*> cargv;
  for (auto& s : argv) cargv.push_back(s.data());
  cargv.push_back(nullptr);
  pid_t pid = 0;
  const int err = posix_spawnp(&pid, o.espeak.c_str(), nullptr, nullptr, cargv.data(), environ);
  if (err != 0)
    throw std::runtime_error("cannot run '" + o.espeak + "': " + std::strerror(err) +
                             " (install Debian's espeak-ng, or pass --espeak PROGRAM)");
  return pid;
}

void wait_one(std::vector<Running>& running, const SpeakOptions& o) {
  int status = 0;
  const pid_t pid = waitpid(-1, &status, 0);
  if (pid < 0) throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
  for (size_t i = 0; i < running.size(); ++i) {
    if (running[i].pid != pid) continue;
    const fm::SpokenClip* c = running[i].clip;
    running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      throw std::runtime_error(o.espeak + " failed (status " + std::to_string(status) + ") speaking \"" + c->text +
                               "\" in voice " + c->voice + " into " + c->file);
    return;
  }
}

int speak(const SpeakOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto classes = fm::fashion_mnist_captions(o.wordnet, o.heldout);
  const auto plan = fm::spoken_plan(classes, o.per_class);
  const std::string manifest = fm::spoken_manifest(plan);
  const fs::path dir(o.out);
  if (up_to_date(dir, manifest, plan)) {
    std::cout << dir.string() << ": " << plan.size() << " spoken captions, up to date\n";
    return 0;
  }
  fs::create_directories(dir.parent_path().empty() ? fs::path(".") : dir.parent_path());
  const fs::path tmp = dir.string() + ".tmp." + std::to_string(getpid());
  fs::remove_all(tmp);
  for (int64_t c = 0; c < static_cast<int64_t>(classes.size()); ++c) fs::create_directories(tmp / ("c" + std::to_string(c)));
  std::vector<Running> running;
  try {
    for (const auto& c : plan) {
      while (static_cast<int64_t>(running.size()) >= o.jobs) wait_one(running, o);
      running.push_back({spawn_espeak(o, c, tmp / c.file), &c});
    }
    while (!running.empty()) wait_one(running, o);
    std::ofstream(tmp / "manifest.tsv", std::ios::binary) << manifest;
  } catch (...) {
    while (!running.empty()) {  // reap the rest before the directory goes
      int status = 0;
      waitpid(running.back().pid, &status, 0);
      running.pop_back();
    }
    fs::remove_all(tmp);
    throw;
  }
  const fs::path old = dir.string() + ".old." + std::to_string(getpid());
  std::error_code ec;
  if (fs::exists(dir, ec)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old, ec);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t heldout = 0;
  for (const auto& c : plan) heldout += c.heldout;
  std::cout << dir.string() << ": " << plan.size() << " spoken captions (" << plan.size() - heldout << " training, "
            << heldout << " held-out) in " << std::fixed << std::setprecision(1) << s << " s\n";
  return 0;
}

}  // namespace

int run_data_speak(const std::vector<std::string>& args) {
  try {
    SpeakOptions o;
    if (!parse(args, o)) return 0;
    return speak(o);
  } catch (const std::invalid_argument& e) {
    std::cerr << "error: " << e.what() << "\n(see tessera data speak --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace tessera::tools

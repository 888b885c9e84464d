// core/src/output_guard.cpp — an output must not be written inside the directory it is read
// from (compared as canonical paths, and file by file for hard links); one run at a time per
// output directory (a flock holding the run's pid).
#include "tessera/core/output_guard.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "tessera/core/error.hpp"

namespace tessera {

namespace fs = std::filesystem;

void refuse_output_inside(const std::string& input_dir, const std::string& output, const std::string& what) {
  std::error_code ec;
  const fs::path in = fs::weakly_canonical(input_dir, ec);
  if (ec) return;  // an input that cannot be resolved is reported by whoever reads it
  const fs::path out = fs::weakly_canonical(output, ec);
  if (ec) return;
  const std::string refuse = "refusing to write " + output + ": it would overwrite " + what + " " + input_dir +
                             " that it is read from; write it outside that directory";
  // Inside: `in` is a prefix of `out`, component by component.
  auto o = out.begin();
  bool inside = true;
  for (auto i = in.begin(); i != in.end(); ++i, ++o) {
    if (i->empty()) continue;  // a trailing separator
    if (o == out.end() || *i != *o) {
      inside = false;
      break;
    }
  }
  if (inside) throw Error(refuse);
  // The same file under another name (a hard link or a bind mount) as one the input holds.
  if (!fs::exists(out, ec) || !fs::is_directory(in, ec)) return;
  for (const auto& entry : fs::directory_iterator(in, ec))
    if (fs::equivalent(entry.path(), out, ec)) throw Error(refuse + " (it is " + entry.path().string() + ")");
}

std::vector<std::string> earlier_run_outputs(const std::string& dir, const std::string& checkpoint_dir,
                                             const std::string& tensorboard_dir) {
  std::vector<std::string> found;
  std::error_code ec;
  auto add_if = [&](const fs::path& p, bool nonempty) {
    if (fs::is_regular_file(p, ec) && (!nonempty || fs::file_size(p, ec) > 0)) found.push_back(p.string());
  };
  // Metrics count once they hold a record: a run that stopped at its start wrote only the
  // header record (JSON Lines) or the header row (CSV), and is nothing to keep.
  auto add_if_records = [&](const fs::path& p, const std::string& header_mark) {
    std::ifstream f(p);
    for (std::string line; std::getline(f, line);)
      if (!line.empty() && line.find(header_mark) == std::string::npos) {
        found.push_back(p.string());
        return;
      }
  };
  add_if_records(fs::path(dir) / "metrics.jsonl", "\"header\":true");
  for (const char* csv : {"metrics.csv", "eval.csv"}) {
    std::ifstream f(fs::path(dir) / csv);
    std::string header, row;
    if (std::getline(f, header) && std::getline(f, row) && !row.empty()) found.push_back((fs::path(dir) / csv).string());
  }
  add_if(fs::path(dir) / "model.safetensors", false);
  if (!tensorboard_dir.empty() && fs::is_directory(tensorboard_dir, ec))
    for (const auto& e : fs::directory_iterator(tensorboard_dir, ec))
      if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) add_if(e.path(), false);
  if (!checkpoint_dir.empty()) add_if(fs::path(checkpoint_dir) / "latest", false);
  return found;
}

OutputDirLock::OutputDirLock(const std::string& dir) {
  const std::string path = dir + "/.tessera.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot open the output directory's lock " + path + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {0};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    std::string holder;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; ++i) holder += buf[i];
    if (err == EWOULDBLOCK)
      throw Error("output directory " + dir + " is in use by another run (pid " + (holder.empty() ? "unknown" : holder) +
                  ", lock " + path + "): wait for it to finish, or give this run another [experiment] output_dir");
    throw Error("cannot lock " + path + ": " + std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    spdlog::warn("could not write this run's pid into {}", path);
}

OutputDirLock::~OutputDirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing drops the flock
}

}  // namespace tessera

// core/src/metrics.cpp — the JSON Lines MetricsWriter and the terminal-aware ProgressLine.
// Metrics records are flushed line by line so a crash loses at most the record being written.
#include "tessera/core/metrics.hpp"

#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "tessera/core/error.hpp"

namespace tessera {

void MetricsWriter::Closer::operator()(std::FILE* f) const {
  if (f != nullptr) std::fclose(f);
}

MetricsWriter::MetricsWriter(const std::string& path, bool append) : path_(path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      throw Error("cannot create the directory of metrics file " + path + ": " + ec.message());
    }
  }
  bool needs_newline = false;
  if (append) {
    // A record cut short by a crash must not swallow the next one.
    if (std::FILE* r = std::fopen(path.c_str(), "rb")) {
      if (std::fseek(r, -1, SEEK_END) == 0) {
        const int c = std::fgetc(r);
        needs_newline = (c != EOF && c != '\n');
      }
      std::fclose(r);
    }
  }
  errno = 0;
  file_.reset(std::fopen(path.c_str(), append ? "ab" : "wb"));
  if (!file_) {
    throw Error("cannot open metrics file " + path + ": " + std::strerror(errno));
  }
  if (needs_newline && (std::fputc('\n', file_.get()) == EOF || std::fflush(file_.get()) != 0)) {
    throw Error("cannot write metrics file " + path + ": " + std::strerror(errno));
  }
}

double unix_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

int64_t truncate_metrics_after(const std::string& path, int64_t step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  std::string kept, line;
  int64_t dropped = 0;
  while (std::getline(in, line)) {
    const nlohmann::json r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool keep = r.is_object() && r.contains("step") && r["step"].is_number_integer() &&
                      r["step"].get<int64_t>() <= step;
    if (keep) kept += line + "\n";
    else ++dropped;
  }
  in.close();
  if (dropped == 0) return 0;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << kept;
    out.flush();
    if (!out) throw Error("cannot rewrite metrics file " + path + " (writing " + tmp + ")");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error("cannot rewrite metrics file " + path + ": " + ec.message());
  return dropped;
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!file_) throw Error("metrics file " + path_ + " is not open (moved-from writer)");
  if (!record.is_object()) {
    throw Error("metrics file " + path_ + ": a record must be a JSON object, got " +
                std::string(record.type_name()));
  }
  std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');
  if (std::fwrite(line.data(), 1, line.size(), file_.get()) != line.size() ||
      std::fflush(file_.get()) != 0) {
    throw Error("cannot write metrics file " + path_ + ": " + std::strerror(errno));
  }
}

const std::string& MetricsWriter::path() const { return path_; }

namespace {
constexpr double kTerminalMinInterval = 0.1;  // seconds between redraws on a terminal

int terminal_columns(std::FILE* out) {
  struct winsize ws {};
  if (::ioctl(::fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}
}  // namespace

ProgressLine::ProgressLine(bool force_plain, double min_interval_s, std::FILE* out)
    : out_(out != nullptr ? out : stdout),
      terminal_(!force_plain && ::isatty(::fileno(out_)) == 1),
      min_interval_s_(min_interval_s > 0 ? min_interval_s : 0.0) {}

ProgressLine::~ProgressLine() {
  try {
    finish();
  } catch (...) {
  }
}

bool ProgressLine::is_terminal() const { return terminal_; }

void ProgressLine::emit(const std::string& text) {
  if (terminal_) {
    std::string shown = text;
    const int cols = terminal_columns(out_);
    if (cols > 1 && shown.size() >= static_cast<size_t>(cols)) shown.resize(cols - 1);
    std::fputs("\r", out_);
    std::fputs(shown.c_str(), out_);
    std::fputs("\033[K", out_);
    on_line_ = true;
  } else {
    std::fputs(text.c_str(), out_);
    std::fputc('\n', out_);
  }
  std::fflush(out_);
  shown_any_ = true;
  pending_ = false;
  last_emit_ = Clock::now();
}

void ProgressLine::update(const std::string& text) {
  last_ = text;
  pending_ = true;
  const double interval = terminal_ ? kTerminalMinInterval : min_interval_s_;
  if (shown_any_) {
    const double since = std::chrono::duration<double>(Clock::now() - last_emit_).count();
    if (since < interval) return;
  }
  emit(last_);
}

void ProgressLine::finish() {
  if (pending_) emit(last_);
  if (terminal_ && on_line_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
  on_line_ = false;
  shown_any_ = false;
  pending_ = false;
}

}  // namespace tessera

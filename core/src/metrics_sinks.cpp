// core/src/metrics_sinks.cpp — CSV and TensorBoard copies of the metrics records: a CSV row per
// record, and TFRecord-framed Event protobufs (wall_time, step, summary of simple_value scalars).
#include "tessera/core/metrics_sinks.hpp"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <cstdlib>

#include "tessera/core/error.hpp"

namespace tessera {
namespace {

std::string csv_cell(const nlohmann::json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) {
    std::string s = "\"";
    for (char c : v.get<std::string>()) s += c == '"' ? std::string("\"\"") : std::string(1, c);
    return s + "\"";
  }
  if (v.is_boolean()) return v.get<bool>() ? "1" : "0";
  if (v.is_number()) return v.dump();
  return csv_cell(nlohmann::json(v.dump()));  // nested values as their JSON text
}

// The cells of one CSV line as this writer quotes them ("..." with "" for a quote).
std::vector<std::string> split_header(const std::string& line) {
  std::vector<std::string> cells(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted && c == '"' && i + 1 < line.size() && line[i + 1] == '"') cells.back() += c, ++i;
    else if (c == '"') quoted = !quoted;
    else if (c == ',' && !quoted) cells.emplace_back();
    else cells.back() += c;
  }
  return cells;
}

// ---- protobuf wire format, the few pieces an Event needs ----
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void tag(std::string& out, uint32_t field, uint32_t wire) { varint(out, (field << 3) | wire); }
template <class T>
void fixed(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts (x86-64, aarch64)
  out.append(b, sizeof(T));
}
void bytes_field(std::string& out, uint32_t field, const std::string& bytes) {
  tag(out, field, 2);
  varint(out, bytes.size());
  out += bytes;
}

uint32_t masked_crc(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

}  // namespace

CsvWriter::CsvWriter(const std::string& path, bool append) : path_(path) {
  if (append) {
    std::ifstream in(path);
    std::string header;
    if (in && std::getline(in, header) && !header.empty()) columns_ = split_header(header);
  }
  errno = 0;
  file_ = std::fopen(path.c_str(), append ? "ab" : "wb");
  if (!file_) throw Error("cannot open metrics file " + path + ": " + std::strerror(errno));
}

CsvWriter::~CsvWriter() {
  if (file_) std::fclose(file_);
}

void CsvWriter::write(const nlohmann::json& record) {
  std::string text;
  if (columns_.empty()) {
    for (const auto& [k, v] : record.items()) columns_.push_back(k);
    for (size_t i = 0; i < columns_.size(); ++i) text += (i ? "," : "") + columns_[i];
    text += "\n";
  }
  for (size_t i = 0; i < columns_.size(); ++i) {
    if (i) text += ",";
    if (record.contains(columns_[i])) text += csv_cell(record[columns_[i]]);
  }
  text += "\n";
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0)
    throw Error("cannot write metrics file " + path_ + ": " + std::strerror(errno));
}

void truncate_csv_after(const std::string& path, int64_t step) {
  std::ifstream in(path);
  std::string header;
  if (!in || !std::getline(in, header)) return;
  const std::vector<std::string> cols = split_header(header);
  size_t at = cols.size();
  for (size_t i = 0; i < cols.size(); ++i)
    if (cols[i] == "step") at = i;
  std::string kept = header + "\n";
  for (std::string line; std::getline(in, line);) {
    const std::vector<std::string> cells = split_header(line);
    char* end = nullptr;
    const long long s = at < cells.size() ? std::strtoll(cells[at].c_str(), &end, 10) : 0;
    const bool numeric = at < cells.size() && !cells[at].empty() && end && *end == '\0';
    if (numeric && s <= step) kept += line + "\n";  // a row cut short by a crash has no step: dropped
  }
  in.close();
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::ofstream(tmp, std::ios::binary | std::ios::trunc) << kept;
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error("cannot rewrite metrics file " + path + ": " + ec.message());
}

uint32_t crc32c(const void* data, size_t size) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;  // reflected Castagnoli
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  path_ = dir + "/events.out.tfevents." + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now).count()) +
          "." + host + "." + std::to_string(::getpid()) + ".tessera";
  errno = 0;
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) throw Error("cannot open TensorBoard event file " + path_ + ": " + std::strerror(errno));
  std::string first;  // Event{wall_time = 1, file_version = 3}
  tag(first, 1, 1);
  fixed(first, std::chrono::duration<double>(now).count());
  bytes_field(first, 3, "brain.Event:2");
  write_event(first);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::write_event(const std::string& event) {
  std::string frame;
  const uint64_t len = event.size();
  fixed(frame, len);
  fixed(frame, masked_crc(&len, sizeof len));
  frame += event;
  fixed(frame, masked_crc(event.data(), event.size()));
  if (std::fwrite(frame.data(), 1, frame.size(), file_) != frame.size() || std::fflush(file_) != 0)
    throw Error("cannot write TensorBoard event file " + path_ + ": " + std::strerror(errno));
}

void TensorBoardWriter::write(const nlohmann::json& record, const std::string& prefix) {
  std::string summary;  // Summary{repeated Value value = 1}; Value{tag = 1, simple_value = 2}
  for (const auto& [k, v] : record.items()) {
    if (!v.is_number() || k == "step" || k == "time" || k == "epoch") continue;
    std::string value;
    bytes_field(value, 1, prefix + "/" + k);
    tag(value, 2, 5);
    fixed(value, static_cast<float>(v.get<double>()));
    bytes_field(summary, 1, value);
  }
  if (summary.empty()) return;
  std::string event;  // Event{wall_time = 1, step = 2, summary = 5}
  tag(event, 1, 1);
  fixed(event, record.contains("time") ? record["time"].get<double>()
                                       : std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  tag(event, 2, 0);
  varint(event, static_cast<uint64_t>(record.value("step", int64_t{0})));
  bytes_field(event, 5, summary);
  write_event(event);
}

MetricsSinks::MetricsSinks(const std::string& output_dir, bool csv, const std::string& tensorboard_dir,
                           int64_t resume_step)
    : jsonl_(output_dir + "/metrics.jsonl", /*append=*/resume_step >= 0) {
  if (csv) {
    const bool append = resume_step >= 0;
    for (const char* name : {"/metrics.csv", "/eval.csv"})
      if (append) truncate_csv_after(output_dir + name, resume_step);
    train_csv_ = std::make_unique<CsvWriter>(output_dir + "/metrics.csv", append);
    eval_csv_ = std::make_unique<CsvWriter>(output_dir + "/eval.csv", append);
  }
  if (!tensorboard_dir.empty()) tensorboard_ = std::make_unique<TensorBoardWriter>(tensorboard_dir);
}

void MetricsSinks::write(const nlohmann::json& record) {
  jsonl_.write(record);
  if (record.value("header", false)) return;  // what the run is: metrics.jsonl only
  const bool eval = record.value("eval", false);
  if (CsvWriter* csv = eval ? eval_csv_.get() : train_csv_.get()) csv->write(record);
  if (tensorboard_) tensorboard_->write(record, eval ? "eval" : "train");
}

}  // namespace tessera

// tessera/core/metrics_sinks.hpp — the same scalar records as metrics.jsonl, for tools that do
// not read JSON: CSV files a spreadsheet opens (metrics.csv, eval.csv) and TensorBoard event
// files (tfevents: TFRecord framing with CRC-32C, Event/Summary protobufs written by hand).
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/core/metrics.hpp"

namespace tessera {

// One CSV file of records: the columns are the first record's keys (sorted, as in the JSON), a
// later key outside them is left out, a missing one is an empty cell. Strings are quoted.
// Appending (resume) keeps the file's own header line and columns. Throws Error naming path.
class CsvWriter {
 public:
  CsvWriter(const std::string& path, bool append);
  ~CsvWriter();
  CsvWriter(const CsvWriter&) = delete;
  CsvWriter& operator=(const CsvWriter&) = delete;
  void write(const nlohmann::json& record);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::vector<std::string> columns_;  // empty until the header is known
};

// Resume: keeps the rows of CSV file `path` whose "step" column is <= step (and the header).
void truncate_csv_after(const std::string& path, int64_t step);

// CRC-32C (Castagnoli) of bytes, as TFRecord frames use it (before masking).
uint32_t crc32c(const void* data, size_t size);

// A TensorBoard event file in `dir` (events.out.tfevents.<unix time>.<host>.<pid>.tessera): one
// Event per record, at its "step" and "time", with a scalar summary per numeric field, tagged
// "<prefix>/<key>". Throws Error naming the file.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;
  void write(const nlohmann::json& record, const std::string& prefix);
  const std::string& path() const { return path_; }

 private:
  void write_event(const std::string& event_bytes);
  std::string path_;
  std::FILE* file_ = nullptr;
};

// Every record of a run, to every place [metrics] asks for: metrics.jsonl (all records, the
// header first), metrics.csv (training records), eval.csv (evaluations), TensorBoard (both, as
// train/<key> and eval/<key>). resume_step >= 0: appending after a resume from that step, the
// CSV rows after it are dropped first (metrics.jsonl is the caller's: truncate_metrics_after).
class MetricsSinks {
 public:
  MetricsSinks(const std::string& output_dir, bool csv, const std::string& tensorboard_dir, int64_t resume_step);
  void write(const nlohmann::json& record);

 private:
  MetricsWriter jsonl_;
  std::unique_ptr<CsvWriter> train_csv_, eval_csv_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

}  // namespace tessera

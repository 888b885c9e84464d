// tessera/core/data_inspect.hpp — `tessera data inspect`: what a config's dataset holds (splits,
// fields, metadata, a few decoded examples, a PNG contact sheet of its images) and how fast the
// core's loader serves it with the configured workers.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace tessera {

struct InspectOptions {
  std::string config;
  std::vector<std::string> sets;
  int64_t examples = 3;   // decoded examples printed (from the training split, in its order)
  int64_t batches = 20;   // batches timed through the loader; 0 = none
  std::string sheet;      // contact sheet path; empty = <output_dir>/contact_sheet.png
};

// Prints the report to `out`; throws the config's, plugin's or dataset's Error.
void inspect_data(const InspectOptions& o, std::ostream& out);

// A grid of up to 64 images (each (C, H, W) or (H, W), C = 1, 3 or 4, any dtype; each scaled
// from its own min..max to 0..255) as an 8-bit PNG, gray or RGB, written with zlib. Throws
// Error when the file cannot be written.
void write_contact_sheet(const std::vector<at::Tensor>& images, const std::string& path);

}  // namespace tessera

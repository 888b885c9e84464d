// webdataset/tar_index.hpp — WebDataset shards on disk: shard patterns -> files, one pass over a
// tar's headers (libarchive) recording where each member's bytes lie, and the grouping of members
// into samples by key (the path up to the first dot after the last slash).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "media/decoder.hpp"

namespace tessera::webdataset {

struct TarMember {
  std::string name;    // UTF-8 path inside the tar
  int64_t offset = 0;  // of its first data byte in the (uncompressed) tar file
  int64_t size = 0;
};

// Every regular-file member, in archive order (ustar, pax and GNU tar; directories, links and
// the like are ignored). Data is skipped by seeking, not read. Throws std::runtime_error naming
// the shard for a compressed tar (this reader serves members by offset: decompress it first,
// e.g. `gunzip -k shard.tar.gz`), a damaged header, a sparse member or a truncated file.
std::vector<TarMember> index_tar(const std::string& path);

// The shard files of one split. `pattern`: a path (relative to `root` unless absolute) with
// WebDataset's brace ranges "{000000..000099}" (zero padded like the first bound), lists
// "{a,b}", and glob wildcards (* ? [..], each sorted). Throws naming the pattern when it
// matches no file.
std::vector<std::string> expand_shards(const std::string& pattern, const std::string& root);

// "dir/000123.seg.png" -> key "dir/000123", extension "seg.png". False when the file name has
// no dot or starts with one (such members belong to no sample).
bool split_member_name(const std::string& name, std::string* key, std::string* extension);

struct WdsSample {
  int32_t shard = 0;                // index into WdsScan::shards
  std::string key;
  std::vector<int32_t> members;     // per field: index into the shard's members, -1 = absent
};

struct WdsSplit {
  std::string name;
  std::vector<WdsSample> samples;   // shard order, then archive order
};

struct WdsScan {
  std::vector<std::string> shards;                 // every shard once
  std::vector<std::vector<TarMember>> members;     // per shard
  std::vector<WdsSplit> splits;
  int64_t groups = 0, skipped = 0;
  std::vector<std::string> warnings;               // one line per reason something was skipped
};

// Indexes the splits' shards (splits: (name, pattern), "" = no such split) and groups members
// into samples: consecutive members of one key (as WebDataset groups them); a member whose
// extension (case-insensitive) is one of a field's '|'-separated extensions fills that field,
// the earlier extension winning. A sample missing a required field is skipped (one warning per
// reason). Throws naming the shard and member for a key that repeats an extension.
WdsScan scan_webdataset(const std::vector<std::pair<std::string, std::string>>& splits, const std::string& root,
                        const std::vector<media::FieldSpec>& fields);

}  // namespace tessera::webdataset

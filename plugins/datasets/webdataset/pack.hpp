// webdataset/pack.hpp — writing WebDataset shards (libarchive, pax tar, reproducible headers) and
// packing a folder dataset into them: tools/pack_webdataset is a thin main over pack_folder.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "folder/folder_scan.hpp"
#include "media/bytes.hpp"

struct archive;  // libarchive's writer

namespace tessera::webdataset {

// Writes samples into <dir>/<prefix>-000000.tar, -000001.tar, ..., `per_shard` samples each.
// Members carry mode 0644, mtime 0 and no owner, so the same input gives the same bytes.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string prefix, int64_t per_shard);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  // One sample: members "<key>.<extension>", in the order given.
  void add(const std::string& key, const std::vector<std::pair<std::string, media::Bytes>>& members);
  // Closes the last shard; returns every shard's path.
  std::vector<std::string> finish();

 private:
  void open_next();
  void close_current();
  std::string dir_, prefix_;
  int64_t per_shard_, in_shard_ = 0;
  ::archive* a_ = nullptr;
  std::string current_;
  std::vector<std::string> written_;
};

struct PackedSplit {
  std::string name;
  int64_t samples = 0;
  std::vector<std::string> shards;
};

// Packs every split of `scan` into <out_dir>/<split>-NNNNNN.tar, in the scan's (folder) order:
// sample key = the example's key (dots in its file stem become '_'), members "<key>.<ext>" with
// the ORIGINAL bytes of each field's file (ext = the file's own extension, lower case) and
// "<key>.cls" (the label as decimal text) with class folders; <out_dir>/classes.txt then lists
// the class names, one per line. Throws naming the file for an unreadable one, two fields whose
// files share an extension, or two keys that collide.
std::vector<PackedSplit> pack_folder(const folder::FolderScan& scan, const std::string& out_dir, int64_t per_shard);

}  // namespace tessera::webdataset

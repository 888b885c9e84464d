// webdataset/pack.cpp — ShardWriter over libarchive's writer; pack_folder.
#include "webdataset/pack.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

namespace tessera::webdataset {
namespace fs = std::filesystem;

ShardWriter::ShardWriter(std::string dir, std::string prefix, int64_t per_shard)
    : dir_(std::move(dir)), prefix_(std::move(prefix)), per_shard_(per_shard) {
  if (per_shard_ < 1) throw std::invalid_argument("samples per shard must be >= 1");
}

ShardWriter::~ShardWriter() {
  if (a_) archive_write_free(a_);
}

void ShardWriter::open_next() {
  char name[32];
  std::snprintf(name, sizeof name, "-%06zu.tar", written_.size());
  current_ = (fs::path(dir_) / (prefix_ + name)).string();
  a_ = archive_write_new();
  if (!a_) throw std::bad_alloc();
  // pax only where ustar cannot say it (long or non-ASCII names); UTF-8 names as given.
  if (archive_write_set_format_pax_restricted(a_) != ARCHIVE_OK || archive_write_set_options(a_, "hdrcharset=UTF-8") < ARCHIVE_WARN ||
      archive_write_open_filename(a_, current_.c_str()) != ARCHIVE_OK)
    throw std::runtime_error(current_ + ": cannot create the shard: " + archive_error_string(a_));
  in_shard_ = 0;
}

void ShardWriter::close_current() {
  if (!a_) return;
  const int r = archive_write_close(a_);
  const std::string err = r == ARCHIVE_OK ? "" : archive_error_string(a_);
  archive_write_free(a_);
  a_ = nullptr;
  if (r != ARCHIVE_OK) throw std::runtime_error(current_ + ": cannot finish the shard: " + err);
  written_.push_back(current_);
}

void ShardWriter::add(const std::string& key, const std::vector<std::pair<std::string, media::Bytes>>& members) {
  if (a_ && in_shard_ == per_shard_) close_current();
  if (!a_) open_next();
  for (const auto& [ext, bytes] : members) {
    const std::string name = key + "." + ext;
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(), archive_entry_free);
    archive_entry_set_pathname_utf8(e.get(), name.c_str());
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), 0644);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(bytes.size()));
    archive_entry_set_mtime(e.get(), 0, 0);
    if (archive_write_header(a_, e.get()) < ARCHIVE_WARN)
      throw std::runtime_error(current_ + ": cannot write member '" + name + "': " + archive_error_string(a_));
    size_t done = 0;
    while (done < bytes.size()) {
      const la_ssize_t n = archive_write_data(a_, bytes.data() + done, bytes.size() - done);
      if (n <= 0) throw std::runtime_error(current_ + ": cannot write member '" + name + "': " + archive_error_string(a_));
      done += static_cast<size_t>(n);
    }
    if (archive_write_finish_entry(a_) < ARCHIVE_WARN)
      throw std::runtime_error(current_ + ": cannot write member '" + name + "': " + archive_error_string(a_));
  }
  ++in_shard_;
}

std::vector<std::string> ShardWriter::finish() {
  close_current();
  return written_;
}

std::vector<PackedSplit> pack_folder(const folder::FolderScan& scan, const std::string& out_dir, int64_t per_shard) {
  fs::create_directories(out_dir);
  std::vector<PackedSplit> out;
  std::set<std::string> keys;
  for (const folder::FolderSplit& split : scan.splits) {
    ShardWriter writer(out_dir, split.name, per_shard);
    PackedSplit packed{split.name, 0, {}};
    for (const folder::FolderExample& e : split.examples) {
      // A WebDataset key ends at the first dot of the file name: keep dots out of the stem.
      std::string key = e.key;
      const size_t base = key.rfind('/') == std::string::npos ? 0 : key.rfind('/') + 1;
      std::replace(key.begin() + static_cast<std::ptrdiff_t>(base), key.end(), '.', '_');
      if (!keys.insert(key).second)
        throw std::runtime_error("pack: two examples map to the sample key '" + key + "' (one is '" + e.key + "')");
      std::vector<std::pair<std::string, media::Bytes>> members;
      for (const std::string& rel : e.files) {
        if (rel.empty()) continue;
        const size_t dot = rel.rfind('.');
        const size_t slash = rel.rfind('/');
        if (dot == std::string::npos || (slash != std::string::npos && dot < slash))
          throw std::runtime_error("pack: '" + rel + "' has no extension to name its member by");
        std::string ext = rel.substr(dot + 1);
        for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        for (const auto& m : members)
          if (m.first == ext || (ext == "cls" && e.label >= 0))
            throw std::runtime_error("pack: two fields of '" + e.key + "' are ." + ext + " files; members are named by extension");
        members.emplace_back(ext, media::read_file((fs::path(scan.root) / rel).string()));
      }
      if (e.label >= 0) {
        const std::string cls = std::to_string(e.label);
        members.emplace_back("cls", media::Bytes(cls.begin(), cls.end()));
      }
      writer.add(key, members);
      ++packed.samples;
    }
    packed.shards = writer.finish();
    out.push_back(std::move(packed));
  }
  if (!scan.class_names.empty()) {
    std::ofstream f(fs::path(out_dir) / "classes.txt");
    for (const std::string& c : scan.class_names) f << c << "\n";
    if (!f) throw std::runtime_error("pack: cannot write '" + (fs::path(out_dir) / "classes.txt").string() + "'");
  }
  return out;
}

}  // namespace tessera::webdataset

// webdataset/tar_index.cpp — index_tar over libarchive's reader, shard patterns over glob(3),
// scan_webdataset.
#include "webdataset/tar_index.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <stdexcept>

namespace tessera::webdataset {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> split_bar(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t bar; (bar = s.find('|', start)) != std::string::npos; start = bar + 1) out.push_back(s.substr(start, bar - start));
  out.push_back(s.substr(start));
  return out;
}

// Expands the first {...} of `s` (a range a..b or a list a,b,c) recursively.
void expand_braces(const std::string& s, std::vector<std::string>& out) {
  const size_t open = s.find('{');
  if (open == std::string::npos) {
    out.push_back(s);
    return;
  }
  const size_t close = s.find('}', open);
  if (close == std::string::npos) throw std::invalid_argument("shard pattern '" + s + "': '{' without '}'");
  const std::string body = s.substr(open + 1, close - open - 1);
  const std::string head = s.substr(0, open), tail = s.substr(close + 1);
  const size_t dots = body.find("..");
  if (dots != std::string::npos) {
    const std::string a = body.substr(0, dots), b = body.substr(dots + 2);
    auto number = [&](const std::string& t) {
      if (t.empty() || t.size() > 18 || !std::all_of(t.begin(), t.end(), ::isdigit))
        throw std::invalid_argument("shard pattern '" + s + "': range {" + body + "} needs two numbers");
      return std::stoll(t);
    };
    const int64_t lo = number(a), hi = number(b);
    if (hi < lo || hi - lo > 10000000) throw std::invalid_argument("shard pattern '" + s + "': bad range {" + body + "}");
    for (int64_t i = lo; i <= hi; ++i) {
      std::string n = std::to_string(i);
      if (n.size() < a.size()) n.insert(0, a.size() - n.size(), '0');
      expand_braces(head + n + tail, out);
    }
  } else {
    size_t start = 0;
    for (size_t comma; (comma = body.find(',', start)) != std::string::npos; start = comma + 1)
      expand_braces(head + body.substr(start, comma - start) + tail, out);
    expand_braces(head + body.substr(start) + tail, out);
  }
}

struct Skip {
  int64_t count = 0;
  std::string example;
};

}  // namespace

std::vector<TarMember> index_tar(const std::string& path) {
  std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), archive_read_free);
  if (!a) throw std::bad_alloc();
  archive_read_support_filter_all(a.get());  // to recognise, and refuse, a compressed shard
  archive_read_support_format_tar(a.get());
  if (archive_read_open_filename(a.get(), path.c_str(), 1 << 16) != ARCHIVE_OK)
    fail(path, std::string("not a readable tar file: ") + archive_error_string(a.get()));
  if (archive_filter_count(a.get()) > 1)
    fail(path, std::string("the shard is compressed (") + archive_filter_name(a.get(), 0) +
                   "): the webdataset reader serves members by their offset and needs uncompressed tar; "
                   "decompress it first (e.g. gunzip -k / zstd -d)");
  std::vector<TarMember> members;
  for (;;) {
    archive_entry* e = nullptr;
    const int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {  // WARN (e.g. a name the C locale cannot show) still has a header
      fail(path, std::string("damaged or truncated tar ") +
                     (members.empty() ? "at its first member" : "after member '" + members.back().name + "'") + ": " +
                     archive_error_string(a.get()));
    }
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    const char* utf8 = archive_entry_pathname_utf8(e);
    const char* raw = archive_entry_pathname(e);
    std::string name = utf8 ? utf8 : raw ? raw : "";
    if (archive_entry_sparse_count(e) > 0) fail(path, "member '" + name + "' is a sparse file (not supported)");
    if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0) fail(path, "member '" + name + "' has no size");
    // After the header (pax / GNU extension records included) the reader stands at the data.
    members.push_back({std::move(name), archive_filter_bytes(a.get(), 0), archive_entry_size(e)});
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail(path, "cannot stat the shard");
  for (const TarMember& m : members)
    if (m.offset + m.size > st.st_size)
      fail(path, "truncated tar: member '" + m.name + "' needs bytes up to " + std::to_string(m.offset + m.size) +
                     ", the file has " + std::to_string(st.st_size));
  return members;
}

std::vector<std::string> expand_shards(const std::string& pattern, const std::string& root) {
  std::vector<std::string> expanded, out;
  expand_braces(pattern, expanded);
  for (std::string p : expanded) {
    if (!p.empty() && p[0] != '/' && !root.empty()) p = root + "/" + p;
    if (p.find_first_of("*?[") == std::string::npos) {
      struct stat st {};
      if (::stat(p.c_str(), &st) == 0) out.push_back(p);
      continue;
    }
    glob_t g{};
    const int r = ::glob(p.c_str(), 0, nullptr, &g);
    if (r == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);  // glob sorts them
    ::globfree(&g);
    if (r != 0 && r != GLOB_NOMATCH) throw std::runtime_error("shard pattern '" + p + "': glob failed");
  }
  if (out.empty())
    throw std::runtime_error("shard pattern '" + pattern + "'" + (root.empty() ? "" : " (under root '" + root + "')") +
                             " matches no file");
  return out;
}

bool split_member_name(const std::string& name, std::string* key, std::string* extension) {
  const size_t slash = name.rfind('/');
  const size_t base = slash == std::string::npos ? 0 : slash + 1;
  const size_t dot = name.find('.', base);
  if (dot == std::string::npos || dot == base || dot + 1 == name.size()) return false;
  *key = name.substr(0, dot);
  *extension = name.substr(dot + 1);
  return true;
}

WdsScan scan_webdataset(const std::vector<std::pair<std::string, std::string>>& splits, const std::string& root,
                        const std::vector<media::FieldSpec>& fields) {
  WdsScan scan;
  // Extension (lower case) -> (field, rank among the field's alternatives).
  std::map<std::string, std::pair<int32_t, size_t>> by_ext;
  for (size_t f = 0; f < fields.size(); ++f) {
    const auto exts = split_bar(fields[f].source);
    for (size_t i = 0; i < exts.size(); ++i) {
      const std::string e = lower(exts[i]);
      if (e.empty() || e[0] == '.')
        throw std::invalid_argument(fields[f].name + " = \"" + fields[f].source + "\": extensions are written without a dot, '|' between them");
      if (!by_ext.emplace(e, std::make_pair(static_cast<int32_t>(f), i)).second)
        throw std::invalid_argument("extension '" + e + "' is mapped to two fields");
    }
  }
  std::map<std::string, int32_t> shard_of;
  Skip incomplete;
  for (const auto& [name, pattern] : splits) {
    if (pattern.empty()) continue;
    WdsSplit split{name, {}};
    for (const std::string& path : expand_shards(pattern, root)) {
      auto [it, fresh] = shard_of.emplace(path, static_cast<int32_t>(scan.shards.size()));
      if (fresh) {
        scan.shards.push_back(path);
        scan.members.push_back(index_tar(path));
      }
      const int32_t shard = it->second;
      const std::vector<TarMember>& members = scan.members[static_cast<size_t>(shard)];
      WdsSample sample;
      std::vector<size_t> rank;
      auto flush = [&] {
        if (sample.key.empty()) return;
        ++scan.groups;
        for (size_t f = 0; f < fields.size(); ++f)
          if (fields[f].required && sample.members[f] < 0) {
            if (incomplete.count++ == 0)
              incomplete.example = "'" + path + "': '" + sample.key + "' has no " + fields[f].name + " (" + fields[f].source + ")";
            sample.key.clear();
            return;
          }
        split.samples.push_back(std::move(sample));
        sample = WdsSample{};
      };
      for (size_t m = 0; m < members.size(); ++m) {
        std::string key, ext;
        if (!split_member_name(members[m].name, &key, &ext)) continue;
        if (key != sample.key) {
          flush();
          sample = WdsSample{shard, key, std::vector<int32_t>(fields.size(), -1)};
          rank.assign(fields.size(), 0);
        }
        const auto hit = by_ext.find(lower(ext));
        if (hit == by_ext.end()) continue;  // a member no field asks for (e.g. .json)
        const auto [f, r] = hit->second;
        int32_t& slot = sample.members[static_cast<size_t>(f)];
        if (slot >= 0 && rank[static_cast<size_t>(f)] == r)
          fail(path, "member '" + members[m].name + "' repeats extension '" + ext + "' of sample '" + key + "'");
        if (slot < 0 || r < rank[static_cast<size_t>(f)]) {
          slot = static_cast<int32_t>(m);
          rank[static_cast<size_t>(f)] = r;
        }
      }
      flush();
    }
    scan.splits.push_back(std::move(split));
  }
  if (scan.splits.empty()) throw std::invalid_argument("webdataset: no split has shards (set train, val or test)");
  scan.skipped = incomplete.count;
  if (incomplete.count)
    scan.warnings.push_back("skipped " + std::to_string(incomplete.count) + " of " + std::to_string(scan.groups) +
                            " samples missing a required field, e.g. " + incomplete.example);
  int64_t total = 0;
  for (const auto& s : scan.splits) total += static_cast<int64_t>(s.samples.size());
  if (total == 0) {
    std::string why;
    for (const std::string& w : scan.warnings) why += "; " + w;
    throw std::runtime_error("webdataset: the shards hold no samples with the configured fields" + why);
  }
  return scan;
}

}  // namespace tessera::webdataset

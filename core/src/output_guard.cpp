// core/src/output_guard.cpp — an output must not be written inside the directory it is read
// from: compared as canonical paths, and file by file for hard links.
#include "tessera/core/output_guard.hpp"

#include <filesystem>
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

}  // namespace tessera

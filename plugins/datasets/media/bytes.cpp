// media/bytes.cpp — read_file and read_range over POSIX open/pread (no shared file position, so
// worker threads read concurrently).
#include "media/bytes.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tessera::media {
namespace {

class Fd {
 public:
  explicit Fd(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

[[noreturn]] void fail(const std::string& path, const std::string& what, const std::string& reason) {
  throw std::runtime_error("cannot read '" + path + "'" + (what.empty() ? "" : " (" + what + ")") + ": " + reason);
}

// Reads exactly out.size() bytes at offset; false at a premature end of file.
bool pread_all(int fd, Bytes& out, int64_t offset, const std::string& path, const std::string& what) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, what, std::strerror(errno));
    }
    if (n == 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

Bytes read_file(const std::string& path) {
  Fd fd(path);
  if (fd.get() < 0) fail(path, "", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail(path, "", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(path, "", "not a regular file");
  Bytes out(static_cast<size_t>(st.st_size));
  if (!pread_all(fd.get(), out, 0, path, "")) fail(path, "", "the file shrank while it was read");
  return out;
}

Bytes read_range(const std::string& path, int64_t offset, int64_t size, const std::string& what) {
  if (offset < 0 || size < 0) fail(path, what, "negative offset or size");
  Fd fd(path);
  if (fd.get() < 0) fail(path, what, std::strerror(errno));
  Bytes out(static_cast<size_t>(size));
  if (!pread_all(fd.get(), out, offset, path, what))
    fail(path, what, "the file ends before byte " + std::to_string(offset + size) + " (truncated?)");
  return out;
}

}  // namespace tessera::media

#include "media/temp_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace vgen::media {
namespace {

std::atomic<uint64_t> next_temp_id{0};

}  // namespace

TempFile::TempFile(const std::string& prefix) {
  // O_EXCL: never reuse a name another writer (or a crashed run with a recycled pid) holds.
  for (;;) {
    path_ = fmt::format("{}.tmp-{}-{}", prefix, ::getpid(), next_temp_id++);
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      ::close(fd);
      return;
    }
    if (errno != EEXIST) fail("cannot create temporary file '{}': {}", path_, std::strerror(errno));
  }
}

TempFile::~TempFile() {
  if (!renamed_) std::remove(path_.c_str());
}

void TempFile::rename_to(const std::string& destination) {
  if (std::rename(path_.c_str(), destination.c_str()) != 0)
    fail("cannot rename '{}' to '{}': {}", path_, destination, std::strerror(errno));
  renamed_ = true;
}

void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  TempFile temp(path);
  {
    std::ofstream out(temp.path(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.close();
    VGEN_CHECK(out, "cannot write '{}': {}", temp.path(), std::strerror(errno));
  }
  temp.rename_to(path);
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  // A folder opens as a stream whose size is -1.
  VGEN_CHECK(!std::filesystem::is_directory(path, ec), "cannot read '{}': it is a folder", path);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  VGEN_CHECK(in, "cannot open '{}': {}", path, std::strerror(errno));
  std::vector<uint8_t> bytes(static_cast<size_t>(in.tellg()));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  VGEN_CHECK(in, "cannot read '{}': {}", path, std::strerror(errno));
  return bytes;
}

}  // namespace vgen::media

// Files that never appear half-written: output goes to a temporary file beside its
// destination (same directory, so the final rename is atomic) and is renamed on success.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vgen::media {

// A new, empty file named `prefix + ".tmp-<pid>-<n>"`, removed when this object goes
// away unless it was renamed into place.
class TempFile {
 public:
  explicit TempFile(const std::string& prefix);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }
  // Atomically replaces `destination` with this file; throws naming both on failure.
  void rename_to(const std::string& destination);

 private:
  std::string path_;
  bool renamed_ = false;
};

// Writes `bytes` to path through a TempFile.
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> read_file(const std::string& path);

}  // namespace vgen::media

#include "cli/output.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace fs = std::filesystem;

namespace vgen::cli {
namespace {

std::string lower_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

// The folder a file will be written into must exist and take new files (the writers create a
// temporary file beside the output, then rename it).
void check_folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  const std::string folder = parent.empty() ? "." : parent.string();
  std::error_code ec;
  const fs::file_status st = fs::status(folder, ec);
  if (!fs::exists(st)) fail("--output {}: the folder '{}' does not exist (create it first)", path, folder);
  if (!fs::is_directory(st)) fail("--output {}: '{}' is not a folder", path, folder);
  if (::access(folder.c_str(), W_OK | X_OK) != 0)
    fail("--output {}: cannot write into the folder '{}': {}", path, folder, std::strerror(errno));
  if (fs::is_directory(fs::status(path, ec))) fail("--output {}: is a folder; give a file name", path);
}

}  // namespace

OutputTarget plan_output(const std::string& path) {
  OutputTarget t;
  t.path = path;
  const std::string ext = lower_extension(path);
  if (ext == ".mp4") {
    t.kind = OutputKind::Mp4;
  } else if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp") {
    t.kind = OutputKind::Image;
  } else {
    fail("--output {}: unsupported extension '{}' (use .mp4, .png, .jpg or .webp)", path, ext);
  }
  check_folder_of(path);
  return t;
}

}  // namespace vgen::cli

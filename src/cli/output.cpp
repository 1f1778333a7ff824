#include "cli/output.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>

#include <fmt/format.h>
#include <fmt/printf.h>

#include "core/error.h"
#include "media/mp4.h"

namespace fs = std::filesystem;

namespace vgen::cli {
namespace {

std::string lower_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

// `folder` must exist and take new files (writers create a temporary file beside each output,
// then rename it).
void check_folder(const std::string& user_path, const std::string& folder) {
  std::error_code ec;
  const fs::file_status st = fs::status(folder, ec);
  if (!fs::exists(st)) fail("--output {}: the folder '{}' does not exist (create it first)", user_path, folder);
  if (!fs::is_directory(st)) fail("--output {}: '{}' is not a folder", user_path, folder);
  if (::access(folder.c_str(), W_OK | X_OK) != 0)
    fail("--output {}: cannot write into the folder '{}': {}", user_path, folder, std::strerror(errno));
}

std::string folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

}  // namespace

OutputTarget plan_output(const std::string& path) {
  OutputTarget t;
  t.path = path;
  std::error_code ec;
  VGEN_CHECK(!path.empty(), "--output: empty path");
  if (path.back() == '/' || fs::is_directory(path, ec)) {
    t.kind = OutputKind::FrameSequence;
    t.folder = true;
    fs::path dir(path);
    if (path.back() == '/') dir = dir.parent_path();
    t.pattern = (dir / "%04d.png").string();
    // The folder itself may be created; what holds it must exist.
    if (fs::is_directory(dir, ec)) check_folder(path, dir.string());
    else check_folder(path, folder_of(dir.string()));
    return t;
  }
  const std::string ext = lower_extension(path);
  if (path.find('%') != std::string::npos) {
    static const std::regex one_field(R"(^[^%]*%0?[0-9]*d[^%]*$)");
    if (ext != ".png" || !std::regex_match(fs::path(path).filename().string(), one_field) ||
        fs::path(path).parent_path().string().find('%') != std::string::npos)
      fail("--output {}: a frame pattern is a .png file name with one %d or %0Nd field (e.g. frames/%04d.png)", path);
    t.kind = OutputKind::FrameSequence;
    t.pattern = path;
  } else if (ext == ".mp4") {
    t.kind = OutputKind::Mp4;
    if (const std::string why = media::mp4_writer_problem(); !why.empty()) fail("--output {}: {}", path, why);
  } else if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp") {
    t.kind = OutputKind::Image;
  } else {
    fail("--output {}: unsupported extension '{}' (use .mp4, .png, .jpg or .webp, a folder for PNG frames, or a "
         "%04d.png pattern)",
         path, ext);
  }
  check_folder(path, folder_of(path));
  return t;
}

void prepare_output(const OutputTarget& target) {
  if (target.kind != OutputKind::FrameSequence) return;
  std::error_code ec;
  fs::create_directories(folder_of(target.pattern), ec);
  if (ec) fail("--output {}: cannot create the folder '{}': {}", target.path, folder_of(target.pattern), ec.message());
}

OutputTarget output_for_video(const OutputTarget& target, int index, int count) {
  if (count == 1) return target;
  OutputTarget t = target;
  const std::string number = fmt::format("{:03d}", index);
  if (target.kind != OutputKind::FrameSequence) {
    const fs::path p(target.path);
    t.path = (p.parent_path() / (p.stem().string() + "_" + number + p.extension().string())).string();
  } else if (target.folder) {
    const fs::path pattern(target.pattern);  // DIR/%04d.png
    t.pattern = (pattern.parent_path() / number / pattern.filename()).string();
    t.path = (pattern.parent_path() / number).string() + "/";
  } else {
    const fs::path pattern(target.pattern);
    t.pattern = (pattern.parent_path() / (number + "_" + pattern.filename().string())).string();
    t.path = t.pattern;
  }
  return t;
}

std::string frame_path(const OutputTarget& target, int64_t index) {
  return fmt::sprintf(target.pattern, index);
}

}  // namespace vgen::cli

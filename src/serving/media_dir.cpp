#include "serving/media_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "media/temp_file.h"
#include "serving/video_id.h"

namespace fs = std::filesystem;

namespace vgen::serving {

MediaDir::MediaDir(const std::string& dir)
    : root_(dir.empty() ? fs::path("vgen-media") : fs::path(dir)), videos_(root_ / "videos"), images_(root_ / "images") {
  std::error_code ec;
  remove_on_close_ = !fs::exists(root_, ec);
  fs::create_directories(videos_, ec);
  if (ec) fail("{}: cannot create the media directory: {}", videos_.string(), ec.message());
  const std::string lock_path = (root_ / "vgen.lock").string();
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) fail("{}: cannot open: {}", lock_path, std::strerror(errno));
  // The lock dies with the process (even kill -9), so a restart never finds it stale.
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd_);
    fail("{}: the media directory is in use by another vgen server", root_.string());
  }
}

MediaDir::~MediaDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
  if (remove_on_close_) {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
}

std::string MediaDir::thumbnail_path(const std::string& id, media::ImageFormat format) const {
  return (videos_ / (id + (format == media::ImageFormat::PNG ? ".thumbnail.png" : ".thumbnail.webp"))).string();
}

std::optional<std::pair<std::string, std::string>> MediaDir::find_thumbnail(const std::string& id) const {
  std::error_code ec;
  for (const auto& [format, type] : {std::pair{media::ImageFormat::WEBP, "image/webp"},
                                     std::pair{media::ImageFormat::PNG, "image/png"}}) {
    const std::string path = thumbnail_path(id, format);
    if (fs::exists(path, ec)) return std::pair{path, std::string(type)};
  }
  return std::nullopt;
}

std::string MediaDir::save_image(const std::vector<uint8_t>& bytes, media::ImageFormat format) const {
  std::error_code ec;
  fs::create_directories(images_, ec);
  if (ec) fail("{}: cannot create the images folder: {}", images_.string(), ec.message());
  // new_video_id's 32 random letters and digits, under the image prefix.
  const std::string name = "img_" + new_video_id().substr(6) + "." + std::string(media::image_format_name(format));
  media::write_file_atomic((images_ / name).string(), bytes);
  return name;
}

std::optional<std::string> MediaDir::image_path(const std::string& name) const {
  const size_t dot = name.find('.');
  if (dot == std::string::npos || !name.starts_with("img_")) return std::nullopt;
  const std::string ext = name.substr(dot + 1);
  if (ext != "png" && ext != "jpeg" && ext != "webp") return std::nullopt;
  // The part before the dot has the shape of a video id with another prefix.
  if (!is_valid_video_id("video_" + name.substr(4, dot - 4))) return std::nullopt;
  return (images_ / name).string();
}

void MediaDir::expire_images(std::chrono::seconds max_age) const {
  std::error_code ec;
  const auto now = fs::file_time_type::clock::now();
  for (const fs::directory_entry& e : fs::directory_iterator(images_, ec)) {
    std::error_code ec2;
    const auto written = e.last_write_time(ec2);
    if (!ec2 && now - written > max_age) fs::remove(e.path(), ec2);
  }
}

void MediaDir::remove_media(const std::string& id) const {
  std::error_code ec;
  fs::remove(video_path(id), ec);
  fs::remove(thumbnail_path(id, media::ImageFormat::WEBP), ec);
  fs::remove(thumbnail_path(id, media::ImageFormat::PNG), ec);
}

void MediaDir::sweep(const std::vector<std::string>& known_ids) const {
  const std::set<std::string> known(known_ids.begin(), known_ids.end());
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(videos_, ec)) {
    const std::string name = e.path().filename().string();
    const std::string id = name.substr(0, name.find('.'));
    if (name.find(".tmp-") != std::string::npos || !known.count(id)) {
      spdlog::info("removing stale media file {}", e.path().string());
      fs::remove(e.path(), ec);
    }
  }
}

}  // namespace vgen::serving

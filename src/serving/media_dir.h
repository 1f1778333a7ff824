// The server's media directory: its job database, its videos/ folder of MP4s and
// thumbnails, its images/ folder of the images answered as URLs (response_format "url"), and
// the lock that keeps a second server out of it.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>

#include "media/image.h"

#include <filesystem>
#include <string>
#include <vector>

namespace vgen::serving {

class MediaDir {
 public:
  // Creates `dir`/videos (empty `dir`: "vgen-media" in the working directory) and takes
  // `dir`/vgen.lock; throws vgen::Error when another vgen server holds it.
  explicit MediaDir(const std::string& dir);
  ~MediaDir();
  MediaDir(const MediaDir&) = delete;
  MediaDir& operator=(const MediaDir&) = delete;

  std::string database_path() const { return (root_ / "vgen.db").string(); }
  std::string video_path(const std::string& id) const { return (videos_ / (id + ".mp4")).string(); }
  // The thumbnail in `format` (WebP normally; PNG where WebP cannot be encoded).
  std::string thumbnail_path(const std::string& id, media::ImageFormat format) const;
  // The thumbnail that exists and its content type; nullopt when there is none.
  std::optional<std::pair<std::string, std::string>> find_thumbnail(const std::string& id) const;
  // A media directory this server created is removed when the server fails to start
  // (nothing left behind); keep() once it has started.
  void keep() { remove_on_close_ = false; }
  // Images answered with response_format "url": images/NAME, NAME = "img_" + 32 random letters
  // and digits + ".png" | ".jpeg" | ".webp". save_image writes one (atomically) and returns its
  // NAME; image_path is the file of a NAME a client sent, nullopt when it is not a valid NAME
  // (no path trick can name another file). expire_images removes those older than `max_age`.
  std::string save_image(const std::vector<uint8_t>& bytes, media::ImageFormat format) const;
  std::optional<std::string> image_path(const std::string& name) const;
  void expire_images(std::chrono::seconds max_age) const;

  // Removes a job's files (those that exist).
  void remove_media(const std::string& id) const;
  // Removes temporary files of an interrupted write, and files of jobs not in `known_ids`
  // (deleted while being written, or in a crash).
  void sweep(const std::vector<std::string>& known_ids) const;

 private:
  std::filesystem::path root_, videos_, images_;
  int lock_fd_ = -1;  // holds the flock until closed
  bool remove_on_close_ = false;
};

}  // namespace vgen::serving

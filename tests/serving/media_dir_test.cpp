// The media directory's image store (response_format "url"): names a client may send are
// checked before they become paths, files are written whole, and old ones expire.
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include <fmt/format.h>

#include "media/temp_file.h"
#include "serving/media_dir.h"

namespace fs = std::filesystem;
using vgen::serving::MediaDir;

namespace {

fs::path scratch(const char* name) {
  const fs::path p = fs::temp_directory_path() / fmt::format("vgen_media_dir_test_{}_{}", name, ::getpid());
  fs::remove_all(p);
  return p;
}

}  // namespace

TEST(ServingMediaDir, SavedImagesAreFoundByTheirName) {
  const fs::path root = scratch("save");
  {
    MediaDir dir(root.string());
    const std::vector<uint8_t> bytes = {1, 2, 3, 250};
    const std::string a = dir.save_image(bytes, vgen::media::ImageFormat::PNG);
    const std::string b = dir.save_image(bytes, vgen::media::ImageFormat::WEBP);
    EXPECT_NE(a, b);
    EXPECT_TRUE(a.starts_with("img_") && a.ends_with(".png")) << a;
    EXPECT_EQ(a.size(), 4 + 32 + 4u) << a;
    EXPECT_TRUE(b.ends_with(".webp")) << b;
    const std::optional<std::string> path = dir.image_path(a);
    ASSERT_TRUE(path.has_value());
    EXPECT_EQ(fs::path(*path), root / "images" / a);
    EXPECT_EQ(vgen::media::read_file(*path), bytes);
    EXPECT_EQ(dir.save_image(bytes, vgen::media::ImageFormat::JPEG).substr(36), ".jpeg");
  }
  fs::remove_all(root);
}

TEST(ServingMediaDir, ImageNamesAreCheckedStrictly) {
  const fs::path root = scratch("names");
  {
    MediaDir dir(root.string());
    const std::string ok = "img_" + std::string(32, 'A');
    EXPECT_TRUE(dir.image_path(ok + ".png"));
    EXPECT_TRUE(dir.image_path(ok + ".jpeg"));
    EXPECT_TRUE(dir.image_path(ok + ".webp"));
    for (const std::string bad : {ok, ok + ".jpg", ok + ".gif", ok + ".png.tmp-1", "video_" + std::string(32, 'A') + ".png",
                                  std::string("img_../../vgen.db"), "img_" + std::string(8, 'A') + ".png",
                                  "img_" + std::string(31, 'A') + "/.png", "img_" + std::string(32, 'A') + "..png",
                                  std::string("img_.png"), std::string(".png"), std::string("")})
      EXPECT_FALSE(dir.image_path(bad)) << bad;
  }
  fs::remove_all(root);
}

TEST(ServingMediaDir, OldImagesExpire) {
  const fs::path root = scratch("expire");
  {
    MediaDir dir(root.string());
    dir.expire_images(std::chrono::seconds(3600));  // no images folder yet: nothing to do
    const std::string old_one = dir.save_image({1}, vgen::media::ImageFormat::PNG);
    const std::string new_one = dir.save_image({2}, vgen::media::ImageFormat::PNG);
    fs::last_write_time(*dir.image_path(old_one), fs::file_time_type::clock::now() - std::chrono::hours(2));
    dir.expire_images(std::chrono::seconds(3600));
    EXPECT_FALSE(fs::exists(*dir.image_path(old_one)));
    EXPECT_TRUE(fs::exists(*dir.image_path(new_one)));
  }
  fs::remove_all(root);
}

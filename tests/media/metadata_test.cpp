// Generation metadata inside outputs: PNG iTXt chunks (valid CRCs, pixels unchanged, read back
// exactly, UTF-8 kept) and MP4 metadata tags (read back, and seen by ffprobe).
#include <gtest/gtest.h>

#include <png.h>
#include <zlib.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "media/image.h"
#include "media/metadata.h"
#include "media/mp4.h"
#include "media/temp_file.h"
#include "support/command.h"

using namespace vgen;
using namespace vgen::media;
using vgen::testing::fresh_dir;

namespace {

Tensor gradient(int64_t frames, int64_t height, int64_t width) {
  Tensor t = Tensor::empty({frames, height, width, 3}, DType::U8);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>((i * 7) % 251);
  return t;
}

const Metadata kMetadata = {{"prompt", "a cät on a mat, \"quoted\"\nsecond line"},
                            {"seed", "18446744073709551615"},
                            {"model", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"},
                            {"software", "vgen test"}};

std::vector<uint8_t> decode_rgb(const std::vector<uint8_t>& png_bytes) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  EXPECT_TRUE(png_image_begin_read_from_memory(&png, png_bytes.data(), png_bytes.size())) << png.message;
  png.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> rgb(PNG_IMAGE_SIZE(png));
  EXPECT_TRUE(png_image_finish_read(&png, nullptr, rgb.data(), 0, nullptr)) << png.message;
  return rgb;
}

}  // namespace

TEST(Metadata, PngTextChunksRoundTripWithValidCrcs) {
  const Tensor image = gradient(1, 9, 14).select(0, 0);
  const std::vector<uint8_t> plain = encode_png(image);
  const std::vector<uint8_t> tagged = encode_png(image, kMetadata);
  EXPECT_EQ(decode_rgb(tagged), decode_rgb(plain)) << "the pixels do not change";
  // Every chunk's CRC is right (libpng's reader only warns on ancillary chunks).
  int itxt = 0;
  for (size_t pos = 8; pos + 12 <= tagged.size();) {
    const uint32_t length = (uint32_t{tagged[pos]} << 24) | (uint32_t{tagged[pos + 1]} << 16) |
                            (uint32_t{tagged[pos + 2]} << 8) | tagged[pos + 3];
    const uint8_t* crc_at = tagged.data() + pos + 8 + length;
    const uint32_t stored = (uint32_t{crc_at[0]} << 24) | (uint32_t{crc_at[1]} << 16) | (uint32_t{crc_at[2]} << 8) | crc_at[3];
    EXPECT_EQ(stored, static_cast<uint32_t>(crc32(0, tagged.data() + pos + 4, length + 4))) << "chunk at " << pos;
    if (std::memcmp(tagged.data() + pos + 4, "iTXt", 4) == 0) ++itxt;
    pos += 12 + length;
  }
  EXPECT_EQ(itxt, 4);
  const std::string dir = fresh_dir("png_metadata");
  write_png(dir + "/a.png", image, kMetadata);
  EXPECT_EQ(read_png_metadata(dir + "/a.png"), kMetadata);
  write_image(dir + "/b.png", image, 90, kMetadata);
  EXPECT_EQ(read_png_metadata(dir + "/b.png"), kMetadata);
  write_png(dir + "/c.png", image);
  EXPECT_TRUE(read_png_metadata(dir + "/c.png").empty());
  EXPECT_THROW(encode_png(image, {{"", "x"}}), Error);
  EXPECT_THROW(read_png_metadata(dir), Error);
}

TEST(Metadata, Mp4TagsRoundTripAndFfprobeSeesThem) {
  if (!vgen::testing::have_program("ffprobe")) GTEST_SKIP() << "ffprobe not installed";
  const std::string dir = fresh_dir("mp4_metadata");
  VideoEncodeOptions options;
  options.fps = 8;
  options.metadata = kMetadata;
  write_mp4(dir + "/a.mp4", gradient(3, 16, 16), options);
  const Metadata read = read_video_metadata(dir + "/a.mp4");
  for (const auto& entry : kMetadata)
    EXPECT_NE(std::find(read.begin(), read.end(), entry), read.end()) << entry.first;
  const auto out = vgen::testing::run_command("ffprobe -v error -show_entries format_tags -of json " +
                                              vgen::testing::shell_quote(dir + "/a.mp4"));
  ASSERT_TRUE(out.has_value());
  const nlohmann::json tags = nlohmann::json::parse(*out)["format"]["tags"];
  EXPECT_EQ(tags["prompt"], kMetadata[0].second);
  EXPECT_EQ(tags["seed"], "18446744073709551615");
}

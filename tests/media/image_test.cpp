// Image encoders: PNG decoded back with libpng (exact), JPEG/WebP decoded with the ffmpeg
// tool (size and approximate pixels), format names, atomic writes and errors.
#include <gtest/gtest.h>

#include "support/errors.h"

#include <png.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <nlohmann/json.hpp>

#include "support/command.h"
#include "core/error.h"
#include "media/image.h"
#include "media/temp_file.h"

using namespace vgen;
using namespace vgen::media;
using vgen::testing::fresh_dir;
using vgen::testing::listing;
using vgen::testing::run_command;
using vgen::testing::shell_quote;
namespace fs = std::filesystem;

namespace {

using vgen::testing::expect_error;

// Uniform noise in every channel: the worst case for lossless coding.
Tensor noise_image(int64_t height, int64_t width, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  Tensor t = Tensor::empty({height, width, 3}, DType::U8);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>(rng() >> 24);
  return t;
}

// A smooth image, what lossy codecs are made for.
Tensor smooth_image(int64_t height, int64_t width) {
  Tensor t = Tensor::empty({height, width, 3}, DType::U8);
  uint8_t* p = t.data<uint8_t>();
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x) {
      uint8_t* px = p + (y * width + x) * 3;
      px[0] = static_cast<uint8_t>(std::lround(40 + 180.0 * x / width));
      px[1] = static_cast<uint8_t>(std::lround(200 - 150.0 * y / height));
      px[2] = static_cast<uint8_t>(std::lround(128 + 60 * std::sin(0.2 * (x + y))));
    }
  return t;
}

std::vector<uint8_t> tensor_bytes(const Tensor& t) {
  const Tensor c = t.contiguous();
  return std::vector<uint8_t>(c.data<uint8_t>(), c.data<uint8_t>() + c.numel());
}

// libpng's simplified reader -> width, height, RGB bytes.
std::vector<uint8_t> decode_png(const std::vector<uint8_t>& bytes, int* width, int* height) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  EXPECT_TRUE(png_image_begin_read_from_memory(&png, bytes.data(), bytes.size())) << png.message;
  png.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> rgb(PNG_IMAGE_SIZE(png));
  EXPECT_TRUE(png_image_finish_read(&png, nullptr, rgb.data(), 0, nullptr)) << png.message;
  *width = static_cast<int>(png.width);
  *height = static_cast<int>(png.height);
  return rgb;
}

// The ffmpeg tool's decode of an image file -> its size (ffprobe) and RGB bytes.
std::vector<uint8_t> decode_with_ffmpeg(const std::string& path, int* width, int* height, std::string* codec) {
  const auto probe = run_command("ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,width,height "
                                 "-of json " + shell_quote(path));
  EXPECT_TRUE(probe.has_value()) << "ffprobe failed on " << path;
  if (!probe) return {};
  const nlohmann::json stream = nlohmann::json::parse(*probe)["streams"][0];
  *width = stream["width"];
  *height = stream["height"];
  *codec = stream["codec_name"];
  const auto out = run_command("ffmpeg -v error -i " + shell_quote(path) + " -f rawvideo -pix_fmt rgb24 -");
  EXPECT_TRUE(out.has_value()) << "ffmpeg could not decode " << path;
  return out ? std::vector<uint8_t>(out->begin(), out->end()) : std::vector<uint8_t>{};
}

double mean_abs_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  double sum = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) sum += std::abs(int(a[i]) - int(b[i]));
  return sum / static_cast<double>(std::max<size_t>(a.size(), 1));
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

}  // namespace

TEST(Image, PngRoundTripIsExact) {
  const Tensor image = noise_image(23, 37, 1);  // odd sizes on purpose
  int width = 0, height = 0;
  EXPECT_EQ(decode_png(encode_png(image), &width, &height), tensor_bytes(image));
  EXPECT_EQ(width, 37);
  EXPECT_EQ(height, 23);

  // A frame of a video tensor taken through a non-contiguous view.
  const Tensor video = noise_image(4 * 9, 10, 2).view({4, 9, 10, 3});
  const Tensor frame = video.transpose(1, 2).select(0, 2);  // [10, 9, 3], strided
  ASSERT_FALSE(frame.is_contiguous());
  EXPECT_EQ(decode_png(encode_png(frame), &width, &height), tensor_bytes(frame));
  EXPECT_EQ(width, 9);
  EXPECT_EQ(height, 10);

  const std::string dir = fresh_dir("png");
  write_png(dir + "/a.png", image);
  EXPECT_EQ(decode_png(read_file(dir + "/a.png"), &width, &height), tensor_bytes(image));
  EXPECT_EQ(encode_image(image, ImageFormat::PNG, 10), encode_png(image)) << "PNG ignores quality";
  EXPECT_EQ(listing(dir), std::vector<std::string>{"a.png"});
}

TEST(Image, JpegDecodesCloseToTheInput) {
  if (!vgen::testing::have_program("ffmpeg") || !vgen::testing::have_program("ffprobe"))
    GTEST_SKIP() << "ffprobe/ffmpeg not installed";
  const std::string dir = fresh_dir("jpeg");
  for (const auto& [h, w] : {std::pair<int64_t, int64_t>{48, 64}, {33, 17}}) {
    const Tensor image = smooth_image(h, w);
    const std::vector<uint8_t> bytes = encode_image(image, ImageFormat::JPEG, 95);
    ASSERT_GE(bytes.size(), 4u);
    EXPECT_EQ(bytes[0], 0xFF);  // SOI
    EXPECT_EQ(bytes[1], 0xD8);
    EXPECT_EQ(bytes[bytes.size() - 2], 0xFF);  // EOI
    EXPECT_EQ(bytes[bytes.size() - 1], 0xD9);
    write_bytes(dir + "/a.jpg", bytes);
    int width = 0, height = 0;
    std::string codec;
    const std::vector<uint8_t> decoded = decode_with_ffmpeg(dir + "/a.jpg", &width, &height, &codec);
    EXPECT_EQ(codec, "mjpeg");
    EXPECT_EQ(width, w);
    EXPECT_EQ(height, h);
    // Quality 95 (4:4:4) on a smooth image: about a level of error; a wrong matrix, range
    // or channel order would cost tens of levels.
    const double error = mean_abs_diff(decoded, tensor_bytes(image));
    EXPECT_LT(error, 2.0) << h << "x" << w << " mean |decoded - original| = " << error;
  }
  const Tensor noise = noise_image(64, 64, 3);
  EXPECT_LT(encode_image(noise, ImageFormat::JPEG, 20).size(), encode_image(noise, ImageFormat::JPEG, 90).size());
}

TEST(Image, WebpDecodesCloseToTheInput) {
  if (!vgen::testing::have_program("ffmpeg") || !vgen::testing::have_program("ffprobe"))
    GTEST_SKIP() << "ffprobe/ffmpeg not installed";
  const std::string dir = fresh_dir("webp");
  for (const auto& [h, w] : {std::pair<int64_t, int64_t>{48, 64}, {33, 17}}) {
    const Tensor image = smooth_image(h, w);
    const std::vector<uint8_t> bytes = encode_image(image, ImageFormat::WEBP, 95);
    ASSERT_GE(bytes.size(), 12u);
    EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 4), "RIFF");
    EXPECT_EQ(std::string(bytes.begin() + 8, bytes.begin() + 12), "WEBP");
    write_bytes(dir + "/a.webp", bytes);
    int width = 0, height = 0;
    std::string codec;
    const std::vector<uint8_t> decoded = decode_with_ffmpeg(dir + "/a.webp", &width, &height, &codec);
    EXPECT_EQ(codec, "webp");
    EXPECT_EQ(width, w);
    EXPECT_EQ(height, h);
    // Lossy WebP is always 4:2:0 (VP8): quality 95 on this image costs about 3 levels on
    // average, as the ffmpeg tool's own rgb24 -> libwebp encode does; a wrong matrix, range
    // or channel order costs tens.
    const double error = mean_abs_diff(decoded, tensor_bytes(image));
    EXPECT_LT(error, 4.0) << h << "x" << w << " mean |decoded - original| = " << error;
  }
  const Tensor noise = noise_image(64, 64, 4);
  EXPECT_LT(encode_image(noise, ImageFormat::WEBP, 20).size(), encode_image(noise, ImageFormat::WEBP, 90).size());
}

TEST(Image, FormatNames) {
  EXPECT_EQ(parse_image_format("png"), ImageFormat::PNG);
  EXPECT_EQ(parse_image_format("JPG"), ImageFormat::JPEG);
  EXPECT_EQ(parse_image_format("jpeg"), ImageFormat::JPEG);
  EXPECT_EQ(parse_image_format("WebP"), ImageFormat::WEBP);
  try {
    parse_image_format("gif");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown image format 'gif' (valid: png, jpeg, jpg, webp)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(image_format_from_path("/out/frame.0001.JPEG"), ImageFormat::JPEG);
  EXPECT_EQ(image_format_from_path("a.webp"), ImageFormat::WEBP);
  EXPECT_THROW(image_format_from_path("/out/frame"), Error);
  try {
    image_format_from_path("/out/a.bmp");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'/out/a.bmp': unknown image extension '.bmp'"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(image_format_mime_type(ImageFormat::WEBP), "image/webp");
  EXPECT_EQ(image_format_name(ImageFormat::JPEG), "jpeg");
}

TEST(Image, WriteImageChoosesFormatFromExtension) {
  const std::string dir = fresh_dir("write_image");
  const Tensor image = smooth_image(16, 24);
  write_image(dir + "/a.PNG", image);
  write_image(dir + "/b.jpg", image, 80);
  write_image(dir + "/c.webp", image, 80);
  int width = 0, height = 0;
  EXPECT_EQ(decode_png(read_file(dir + "/a.PNG"), &width, &height), tensor_bytes(image));
  EXPECT_EQ(read_file(dir + "/b.jpg"), encode_image(image, ImageFormat::JPEG, 80));
  EXPECT_EQ(read_file(dir + "/c.webp"), encode_image(image, ImageFormat::WEBP, 80));
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"a.PNG", "b.jpg", "c.webp"}));
}

TEST(Image, ErrorsNameTheProblemAndLeaveNoFiles) {
  const std::string dir = fresh_dir("image_errors");
  const Tensor image = smooth_image(8, 8);
  expect_error([&] { encode_png(Tensor::zeros({8, 8, 3})); }, "U8 [H, W, 3] RGB tensor, got F32[8, 8, 3]");
  expect_error([&] { encode_image(Tensor::zeros({8, 8, 4}, DType::U8), ImageFormat::JPEG, 90); },
               "encoding jpeg: the image must be a U8 [H, W, 3]");
  expect_error([&] { encode_image(Tensor::zeros({1, 8, 8, 3}, DType::U8), ImageFormat::WEBP, 90); },
               "got U8[1, 8, 8, 3]");
  expect_error([&] { encode_image(image, ImageFormat::JPEG, 0); }, "quality must be in 1..100, got 0");
  expect_error([&] { encode_image(image, ImageFormat::WEBP, 101); }, "quality must be in 1..100, got 101");
  expect_error([&] { write_image(dir + "/a.gif", image); }, "unknown image extension '.gif'");
  expect_error([&] { write_image(dir + "/bad.png", Tensor::zeros({8, 8, 3})); }, "writing '" + dir + "/bad.png'");
  expect_error([&] { write_png(dir + "/missing/a.png", image); }, "missing/a.png.tmp");
  fs::create_directories(dir + "/taken.jpg/child");
  expect_error([&] { write_image(dir + "/taken.jpg", image); }, "cannot rename");
  EXPECT_EQ(listing(dir), std::vector<std::string>{"taken.jpg"}) << "temporary file left behind";
}

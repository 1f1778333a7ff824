// media::decode_image / read_image against PIL's Image.open(f).convert("RGB") on the files
// of tests/fixtures/image_ref/images (written by PIL, tools/fixtures/make_image_extra.py):
// every pixel must be equal (the same libraries with PIL's settings). Broken inputs must be
// one clear vgen::Error naming the file, never a crash.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <vector>

#include "media/image.h"
#include "media/temp_file.h"
#include "support/errors.h"
#include "support/parity.h"

using namespace vgen;
namespace fs = std::filesystem;

namespace {

std::string image_path(const std::string& name) { return vgen::testing::fixture("image_ref/images/" + name); }

int64_t differing_bytes(const Tensor& a, const Tensor& b) {
  int64_t n = 0;
  for (int64_t i = 0; i < a.numel(); ++i) n += a.data<uint8_t>()[i] != b.data<uint8_t>()[i];
  return n;
}

// The fixture's RGB PNG with its IHDR rewritten to width x height (CRC recomputed).
std::vector<uint8_t> png_with_size(uint32_t width, uint32_t height) {
  std::vector<uint8_t> png = media::read_file(image_path("rgb_37x23.png"));
  for (int i = 0; i < 4; ++i) {
    png[16 + i] = static_cast<uint8_t>(width >> (24 - 8 * i));
    png[20 + i] = static_cast<uint8_t>(height >> (24 - 8 * i));
  }
  const uLong crc = crc32(0, png.data() + 12, 17);  // "IHDR" + its 13 bytes
  for (int i = 0; i < 4; ++i) png[29 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
  return png;
}

}  // namespace

TEST(ImageDecode, SamePixelsAsPil) {
  const WeightStore ref = vgen::testing::reference("image_ref/decoded.safetensors");
  int files = 0;
  for (const std::string& name : ref.names()) {
    const Tensor expected = ref.get(name);
    const Tensor out = media::read_image(image_path(name));
    ASSERT_EQ(out.dtype(), DType::U8) << name;
    ASSERT_EQ(out.shape(), expected.shape()) << name;
    EXPECT_EQ(differing_bytes(out, expected.contiguous()), 0) << name;
    ++files;
  }
  EXPECT_EQ(files, 16);
  std::printf("[ decode ] %d PNG/JPEG/WebP files, all pixels equal to PIL's\n", files);
}

// The format comes from the bytes, not the name.
TEST(ImageDecode, FormatFromContentNotName) {
  const std::vector<uint8_t> jpeg = media::read_file(image_path("rgb444_37x23.jpg"));
  const Tensor out = media::decode_image(jpeg.data(), jpeg.size(), "upload.png");
  EXPECT_EQ(out.shape(), (Shape{23, 37, 3}));
}

TEST(ImageDecode, BrokenInputsAreErrorsNamingTheFile) {
  using vgen::testing::expect_error;
  for (const char* name :
       {"rgb_37x23.png", "rgb420_64x48.jpg", "progressive_64x48.jpg", "lossy_64x48.webp", "lossless_37x23.webp"}) {
    const std::vector<uint8_t> bytes = media::read_file(image_path(name));
    // Cut short at several points: in the header, in the middle, just before the end of the data.
    for (size_t keep : {size_t{10}, size_t{40}, bytes.size() / 2, bytes.size() - 40}) {
      const std::string what = fmt::format("{}[:{}]", name, keep);
      const std::string message = vgen::testing::error_of([&] { media::decode_image(bytes.data(), keep, what); });
      EXPECT_NE(message.find("'" + what + "'"), std::string::npos) << message;
    }
    // Garbage after a valid signature.
    std::vector<uint8_t> garbage(bytes.begin(), bytes.begin() + 16);
    for (int i = 0; i < 200; ++i) garbage.push_back(static_cast<uint8_t>(i * 37 + 11));
    expect_error([&] { media::decode_image(garbage.data(), garbage.size(), "garbage.img"); }, "'garbage.img'");
  }
  const std::vector<uint8_t> text{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'};
  expect_error([&] { media::decode_image(text.data(), text.size(), "notes.png"); },
               "'notes.png': not a PNG, JPEG or WebP image");
  expect_error([&] { media::decode_image(nullptr, 0, "empty.jpg"); }, "'empty.jpg': the file is empty");

  const fs::path dir = fs::path(::testing::TempDir()) / "vgen_image_decode";
  fs::create_directories(dir);
  media::write_file_atomic((dir / "empty.png").string(), {});
  expect_error([&] { media::read_image((dir / "empty.png").string()); }, "empty.png': the file is empty");
  expect_error([&] { media::read_image((dir / "missing.png").string()); }, "missing.png");

  // A PNG whose IHDR says 0 x 0 (with a valid CRC: libpng's own check refuses it).
  std::vector<uint8_t> zero = png_with_size(0, 0);
  expect_error([&] { media::decode_image(zero.data(), zero.size(), "zero.png"); }, "'zero.png': not a readable PNG");
}

// Sizes from the headers are bounded before any pixel is allocated.
TEST(ImageDecode, AbsurdSizesAreRefused) {
  const std::vector<uint8_t> png = png_with_size(100000, 100000);
  vgen::testing::expect_error([&] { media::decode_image(png.data(), png.size(), "bomb.png"); },
                              "'bomb.png': the PNG image is 100000x100000, more than the 268435456 pixels");

  // A JPEG whose SOF says 65500 x 65500 (PIL would call this a decompression bomb).
  std::vector<uint8_t> jpeg = media::read_file(image_path("rgb444_37x23.jpg"));
  for (size_t i = 0; i + 8 < jpeg.size(); ++i)
    if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xC0) {  // SOF0: length(2) precision(1) height(2) width(2)
      jpeg[i + 5] = jpeg[i + 7] = 0xFF;
      jpeg[i + 6] = jpeg[i + 8] = 0xDC;
      break;
    }
  vgen::testing::expect_error([&] { media::decode_image(jpeg.data(), jpeg.size(), "bomb.jpg"); },
                              "'bomb.jpg': the JPEG image is 65500x65500, more than the 268435456 pixels");
}

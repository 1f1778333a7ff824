// Decoding PNG, JPEG and WebP to the RGB pixels PIL gives (see decode_image in image.h).
//
// libpng and libjpeg report errors by longjmp: every C++ object that lives across a
// setjmp below is declared before it, so that a jump skips no destructor, and each error
// handler copies its message out before jumping. Refusals of our own free the decoder and
// throw directly (no C frame is unwound).
#include <png.h>
#include <webp/decode.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

// jpeglib.h needs size_t and FILE declared first.
#include <jerror.h>
#include <jpeglib.h>

#include "core/error.h"
#include "media/image.h"
#include "media/temp_file.h"

namespace vgen::media {
namespace {

void check_pixel_count(uint64_t width, uint64_t height, const std::string& name, const char* format) {
  VGEN_CHECK(width > 0 && height > 0, "'{}': the {} header says the image is {}x{}", name, format, width, height);
  VGEN_CHECK(width * height <= static_cast<uint64_t>(kMaxDecodedPixels),
             "'{}': the {} image is {}x{}, more than the {} pixels vgen decodes", name, format, width, height,
             kMaxDecodedPixels);
}

// ---- PNG ----

struct PngSource {
  const uint8_t* data;
  size_t size;
  size_t offset;
  char message[256];  // libpng's error
};

void png_fail(png_structp png, png_const_charp message) {
  auto* source = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(source->message, sizeof source->message, "%s", message);
  png_longjmp(png, 1);
}

void png_ignore_warning(png_structp, png_const_charp) {}  // PIL reads past them too

void png_read_bytes(png_structp png, png_bytep out, png_size_t count) {
  auto* source = static_cast<PngSource*>(png_get_io_ptr(png));
  if (count > source->size - source->offset) png_error(png, "the file ends early (truncated)");
  std::memcpy(out, source->data + source->offset, count);
  source->offset += count;
}

Tensor decode_png(const uint8_t* data, size_t size, const std::string& name) {
  PngSource source{data, size, 0, "unknown error"};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &source, png_fail, png_ignore_warning);
  VGEN_CHECK(png != nullptr, "'{}': libpng could not start (out of memory)", name);
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    fail("'{}': libpng could not start (out of memory)", name);
  }
  Tensor out;                   // U8 [H, W, 3]
  std::vector<uint8_t> gray16;  // the rows of a 16-bit gray image
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    fail("'{}': not a readable PNG file: {}", name, source.message);
  }
  png_set_read_fn(png, &source, png_read_bytes);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  const int bit_depth = png_get_bit_depth(png, info), color_type = png_get_color_type(png, info);
  if (static_cast<uint64_t>(width) * height > static_cast<uint64_t>(kMaxDecodedPixels)) {
    png_destroy_read_struct(&png, &info, nullptr);
    fail("'{}': the PNG image is {}x{}, more than the {} pixels vgen decodes", name, width, height, kMaxDecodedPixels);
  }
  // PIL opens 16-bit gray as mode I;16, which convert("RGB") clips to 255; every other
  // 16-bit mode it unpacks to its high byte, as png_set_strip_16 does.
  const bool is_gray16 = bit_depth == 16 && color_type == PNG_COLOR_TYPE_GRAY;
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bit_depth == 16 && !is_gray16) png_set_strip_16(png);
  // Alpha (and tRNS, which palette expansion turns into alpha) is dropped, not composited.
  png_set_strip_alpha(png);
  if (!is_gray16 && (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA))
    png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  if (row_bytes != static_cast<size_t>(width) * (is_gray16 ? 2 : 3)) {
    png_destroy_read_struct(&png, &info, nullptr);
    fail("'{}': unexpected PNG layout after conversion ({} bytes per row for width {})", name, row_bytes, width);
  }
  out = Tensor::empty({static_cast<int64_t>(height), static_cast<int64_t>(width), 3}, DType::U8);
  uint8_t* pixels = out.data<uint8_t>();
  if (is_gray16) gray16.resize(row_bytes * height);
  rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y)
    rows[y] = (is_gray16 ? gray16.data() : pixels) + static_cast<size_t>(y) * row_bytes;
  png_read_image(png, rows.data());
  png_destroy_read_struct(&png, &info, nullptr);
  if (is_gray16)
    for (size_t i = 0; i < static_cast<size_t>(width) * height; ++i) {
      const unsigned value = (gray16[2 * i] << 8) | gray16[2 * i + 1];  // big-endian samples
      pixels[3 * i] = pixels[3 * i + 1] = pixels[3 * i + 2] = static_cast<uint8_t>(value > 255 ? 255 : value);
    }
  return out;
}

// ---- JPEG ----

struct JpegErrors {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

// libjpeg's default error_exit calls exit(): jump back to decode_jpeg instead.
void jpeg_fail(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings: libjpeg pads a file that ends early with gray and goes on; PIL refuses such a
// file ("image file is truncated"), so that one is an error here. PIL decodes through the
// others (extraneous bytes and the like), so they are ignored.
void jpeg_message(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
    std::snprintf(errors->message, sizeof errors->message, "the file ends early (truncated)");
    std::longjmp(errors->jump, 1);
  }
}

void jpeg_no_output(j_common_ptr) {}

Tensor decode_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  jpeg_decompress_struct cinfo{};
  JpegErrors errors{};
  cinfo.err = jpeg_std_error(&errors.pub);
  errors.pub.error_exit = jpeg_fail;
  errors.pub.emit_message = jpeg_message;
  errors.pub.output_message = jpeg_no_output;
  Tensor out;                 // U8 [H, W, 3]
  std::vector<uint8_t> cmyk;  // the rows of a CMYK image
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fail("'{}': not a readable JPEG file: {}", name, errors.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const uint64_t width = cinfo.image_width, height = cinfo.image_height;
  if (width * height > static_cast<uint64_t>(kMaxDecodedPixels)) {
    jpeg_destroy_decompress(&cinfo);
    fail("'{}': the JPEG image is {}x{}, more than the {} pixels vgen decodes", name, width, height, kMaxDecodedPixels);
  }
  // PIL's modes by component count: 1 L, 3 RGB, 4 CMYK (inverted: Adobe's convention, which
  // PIL always assumes). libjpeg's defaults are PIL's: ISLOW IDCT, fancy upsampling.
  const bool is_cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  if (!is_cmyk && cinfo.jpeg_color_space != JCS_GRAYSCALE && cinfo.jpeg_color_space != JCS_YCbCr &&
      cinfo.jpeg_color_space != JCS_RGB) {
    jpeg_destroy_decompress(&cinfo);
    fail("'{}': JPEG with {} components in an unknown colour space is not supported", name, cinfo.num_components);
  }
  cinfo.out_color_space = is_cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  out = Tensor::empty({static_cast<int64_t>(height), static_cast<int64_t>(width), 3}, DType::U8);
  uint8_t* pixels = out.data<uint8_t>();
  const size_t row_bytes = static_cast<size_t>(width) * (is_cmyk ? 4 : 3);
  if (is_cmyk) cmyk.resize(row_bytes * height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = (is_cmyk ? cmyk.data() : pixels) + static_cast<size_t>(cinfo.output_scanline) * row_bytes;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  // All rows are read; like PIL, whatever follows them (even a missing EOI) does not matter.
  jpeg_destroy_decompress(&cinfo);
  if (is_cmyk)
    for (size_t i = 0; i < static_cast<size_t>(width) * height; ++i) {
      // PIL's "CMYK;I" unpacking (x -> 255 - x), then Convert.c's cmyk2rgb: nk = 255 - K,
      // which is the stored k; out = nk - MULDIV255(C, nk).
      const int nk = cmyk[4 * i + 3];
      for (int c = 0; c < 3; ++c) {
        const int tmp = (255 - cmyk[4 * i + c]) * nk + 128;
        const int v = nk - (((tmp >> 8) + tmp) >> 8);
        pixels[3 * i + c] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
      }
    }
  return out;
}

// ---- WebP ----

const char* webp_status(VP8StatusCode status) {
  switch (status) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "the file ends early (truncated)";
  }
  return "unknown error";
}

Tensor decode_webp(const uint8_t* data, size_t size, const std::string& name) {
  WebPBitstreamFeatures features;
  const VP8StatusCode status = WebPGetFeatures(data, size, &features);
  VGEN_CHECK(status == VP8_STATUS_OK, "'{}': not a readable WebP file: {}", name, webp_status(status));
  VGEN_CHECK(!features.has_animation, "'{}': animated WebP files are not supported (one picture is expected)", name);
  check_pixel_count(static_cast<uint64_t>(features.width), static_cast<uint64_t>(features.height), name, "WebP");
  Tensor out = Tensor::empty({features.height, features.width, 3}, DType::U8);
  // libwebp's defaults are PIL's (fancy upsampling of the chroma); alpha is not output.
  const size_t bytes = static_cast<size_t>(out.numel());
  VGEN_CHECK(WebPDecodeRGBInto(data, size, out.data<uint8_t>(), bytes, features.width * 3) != nullptr,
             "'{}': not a readable WebP file: the picture data is corrupt or cut short", name);
  return out;
}

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t length, size_t at = 0) {
  return size >= at + length && std::memcmp(data + at, magic, length) == 0;
}

}  // namespace

Tensor decode_image(const uint8_t* data, size_t size, const std::string& name) {
  VGEN_CHECK(size > 0 && data != nullptr, "'{}': the file is empty, not an image", name);
  if (starts_with(data, size, "\x89PNG\r\n\x1a\n", 8)) return decode_png(data, size, name);
  if (starts_with(data, size, "\xFF\xD8\xFF", 3)) return decode_jpeg(data, size, name);
  if (starts_with(data, size, "RIFF", 4) && starts_with(data, size, "WEBP", 4, 8)) return decode_webp(data, size, name);
  fail("'{}': not a PNG, JPEG or WebP image (its first bytes match none of them)", name);
}

Tensor read_image(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  return decode_image(bytes.data(), bytes.size(), path);
}

}  // namespace vgen::media
